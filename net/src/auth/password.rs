//! Password hashing and checking (bcrypt, as etcd), off the request cores.
//!
//! bcrypt at etcd's default cost takes tens of milliseconds of CPU on purpose; run on a request
//! core it would stall every client of that core, and a password-guessing client could take the
//! core. So hashes are made and checked on one dedicated thread at a lower scheduling priority,
//! fed through a bounded queue: when the queue is full the request is refused at once with
//! etcd's "too many requests" instead of queueing without bound.

use std::sync::Arc;

use tonic::Status;

use crate::errors::EtcdError;

/// Jobs waiting for the bcrypt thread before new ones are refused.
const QUEUE: usize = 64;
/// bcrypt reads at most 72 bytes of a password; Go's bcrypt refuses longer ones.
const MAX_PASSWORD: usize = 72;

type Job = Box<dyn FnOnce() + Send>;

/// A handle to the bcrypt thread; cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    jobs: flume::Sender<Job>,
    cost: u32,
}

impl Passwords {
    /// Starts the bcrypt thread; `cost` is --bcrypt-cost (4 to 31).
    pub fn start(cost: u32) -> std::io::Result<Passwords> {
        let (jobs, rx) = flume::bounded::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("retcd-bcrypt".into())
            .spawn(move || {
                // SAFETY: setpriority on this thread's own id changes only its scheduling
                // priority; a failure leaves it at the default, which is harmless.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
                }
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        Ok(Passwords { jobs, cost })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        let (tx, rx) = flume::bounded(1);
        self.jobs
            .try_send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| EtcdError::TooManyRequests.status())?;
        rx.recv_async()
            .await
            .map_err(|_| EtcdError::Stopped.status())
    }

    /// The bcrypt hash of `password` (`$2a$`, as Go's bcrypt writes it).
    pub async fn hash(&self, password: String) -> Result<Vec<u8>, Status> {
        if password.len() > MAX_PASSWORD {
            return Err(Status::unknown("bcrypt: password length exceeds 72 bytes"));
        }
        let cost = self.cost;
        self.run(move || {
            bcrypt::hash_with_result(password.as_bytes(), cost)
                .map(|h| h.format_for_version(bcrypt::Version::TwoA).into_bytes())
                .map_err(|e| Status::unknown(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `hash`; a malformed hash matches nothing.
    pub async fn verify(&self, password: String, hash: Arc<[u8]>) -> Result<bool, Status> {
        self.run(move || {
            std::str::from_utf8(&hash)
                .ok()
                .and_then(|h| bcrypt::verify(password.as_bytes(), h).ok())
                .unwrap_or(false)
        })
        .await
    }
}
