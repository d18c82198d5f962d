//! raft-rs logs through slog, retcd through tracing: this module owns the bridge. A slog drain
//! turns each raft-rs record into a tracing event (target `raft`) at the same level, with the
//! record's key-values (term, index, peer ids …) appended to the message, so raft's elections,
//! term changes and configuration changes land in retcd's log like etcd's raft lines do.
//!
//! Used only by [`crate::core`] when it builds the RawNode.

use std::fmt::Write as _;

/// The drain: stateless, never fails.
struct TracingDrain;

/// The key-values of one record, as ` key=value` pairs.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut pairs = Pairs(String::new());
        // Serializing into a String cannot fail.
        let _ = slog::KV::serialize(&record.kv(), record, &mut pairs);
        let _ = slog::KV::serialize(values, record, &mut pairs);
        let (msg, kv) = (record.msg(), pairs.0);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{msg}{kv}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{kv}"),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}{kv}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}{kv}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{kv}"),
        }
        Ok(())
    }
}

/// The logger handed to raft-rs.
pub(crate) fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_keep_their_message_and_pairs() {
        let mut pairs = super::Pairs(String::new());
        slog::Serializer::emit_arguments(&mut pairs, "term", &format_args!("{}", 2)).unwrap();
        slog::Serializer::emit_arguments(&mut pairs, "raft_id", &format_args!("{}", 7)).unwrap();
        assert_eq!(pairs.0, " term=2 raft_id=7");
        // The drain accepts records at every level without failing.
        let log = super::logger();
        slog::info!(log, "became leader at term {}", 2; "term" => 2);
        slog::crit!(log, "boom");
    }
}
