//! The front end of every client connection, between the socket (or TLS) and hyper's HTTP/2
//! server: it makes h2 accept the `:authority` that etcd's clients send.
//!
//! Why: etcdctl 3.4 (grpc-go) sends its one-endpoint maintenance calls with the endpoint URL as
//! written as the HTTP/2 `:authority` (`http://127.0.0.1:2379`). grpc-go's server takes it; h2
//! resets the stream (PROTOCOL_ERROR) because that is not an authority. This front end rewrites
//! such an `:authority` to the URL's host and port (or drops it when even that is not one)
//! before h2 decodes the request.
//!
//! How, and what it costs: header blocks are HPACK-coded against a dynamic table that the
//! client's encoder and h2's decoder keep in step, so one block cannot be changed alone. The
//! front end parses frame boundaries up to the connection's first header block, passing every
//! byte on as it goes, and decodes that one block ([`crate::hpack`]):
//! - its `:authority` is fine (every gRPC client but etcd's URL endpoints): everything passes
//!   through unchanged from then on and the front end does no more work than one branch per
//!   read (grpc-go sends one `:authority` for all streams of a connection);
//! - it is not: the connection switches to rewriting, where this front end keeps the client's
//!   dynamic table and re-encodes every header block as literals without indexing (so h2's
//!   table stays empty), with the `:authority` fixed. Other frames pass through as they are.
//!
//! Invariants: bytes reach hyper in the order the client sent them, frames other than HEADERS
//! and CONTINUATION unchanged; no header block larger than [`MAX_BLOCK_BYTES`] is buffered (a
//! larger one passes through for h2 to refuse while sniffing, and fails the connection while
//! rewriting, where it cannot be passed on); malformed input either passes to h2 unchanged (it
//! answers as it always did) or ends the connection with an I/O error — never a panic.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::rt::{ReadBuf, ReadBufCursor};

use crate::hpack::{self, Decoder, Field};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The decoder's dynamic table limit: h2's SETTINGS_HEADER_TABLE_SIZE (the protocol default,
/// which hyper does not change).
const HEADER_TABLE_SIZE: usize = 4096;
/// The largest header block (all its fragments) buffered.
pub const MAX_BLOCK_BYTES: usize = 1 << 20;
/// The largest frame payload written: the protocol's initial SETTINGS_MAX_FRAME_SIZE, which
/// hyper's server keeps.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// How much is read from the inner stream at once while not passing through.
const READ_CHUNK: usize = 16 * 1024;

/// A connection's I/O with `:authority` repair on the way in (see the module documentation).
/// Writes pass straight to the inner stream.
#[derive(Debug)]
pub struct AuthorityFront<IO> {
    io: IO,
    /// `None` once the connection passes through.
    front: Option<Box<Front>>,
    /// Bytes read from `io` not yet processed.
    input: Vec<u8>,
    /// Processed bytes not yet handed to hyper, from `out_pos`.
    output: Vec<u8>,
    out_pos: usize,
    eof: bool,
    /// Whether the client sent the HTTP/2 preface; `None` until its first bytes tell.
    http2: Option<bool>,
}

impl<IO> AuthorityFront<IO> {
    /// Wraps a freshly accepted connection.
    pub fn new(io: IO) -> Self {
        AuthorityFront {
            io,
            front: Some(Box::default()),
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            eof: false,
            http2: None,
        }
    }

    /// Whether the connection was switched to rewriting header blocks.
    pub fn is_rewriting(&self) -> bool {
        self.front.as_ref().is_some_and(|f| f.decoder.is_some())
    }

    /// Reads until the client's first bytes show whether it speaks HTTP/2 (the connection
    /// preface) or not (anything else, or nothing before it closed); what was read is kept for
    /// hyper either way.
    pub async fn is_http2(&mut self) -> io::Result<bool>
    where
        IO: hyper::rt::Read + Unpin,
    {
        std::future::poll_fn(|cx| {
            loop {
                if let Some(http2) = self.http2 {
                    return Poll::Ready(Ok(http2));
                }
                ready!(self.poll_fill(cx))?;
            }
        })
        .await
    }

    /// Reads once from `io` into `input` and processes it (at the end of the stream, hands
    /// whatever is pending on and passes through).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        IO: hyper::rt::Read + Unpin,
    {
        let len = self.input.len();
        self.input.resize(len + READ_CHUNK, 0);
        let mut read = ReadBuf::new(&mut self.input[len..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, read.unfilled());
        let n = read.filled().len();
        self.input.truncate(len + n);
        ready!(polled)?;
        if n == 0 {
            // The client closed its side: whatever is pending goes to hyper as it is.
            self.eof = true;
            self.output.extend_from_slice(&self.input);
            self.input.clear();
            self.front = None;
            self.http2.get_or_insert(false);
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(self.process())
    }

    /// Runs the front end over what was read; on a pass-through decision, hands all the rest on.
    fn process(&mut self) -> io::Result<()> {
        let Some(front) = self.front.as_mut() else {
            return Ok(());
        };
        let (consumed, pass) = front.process(&self.input, &mut self.output)?;
        if front.preface_left == 0 {
            self.http2 = Some(true);
        } else if pass {
            self.http2 = Some(false);
        }
        if pass {
            self.output.extend_from_slice(&self.input[consumed..]);
            self.input.clear();
            self.front = None;
        } else {
            self.input.drain(..consumed);
        }
        Ok(())
    }
}

/// The frame parser and, once rewriting, the client's HPACK state.
#[derive(Debug)]
struct Front {
    /// Bytes of the preface still to come.
    preface_left: usize,
    /// Bytes of the current (non-header) frame's payload still to pass through.
    verbatim_left: usize,
    /// The header block being collected.
    block: Option<Block>,
    /// The client's dynamic table, once the connection is rewritten (`None` while sniffing).
    decoder: Option<Decoder>,
}

impl Default for Front {
    fn default() -> Self {
        Front {
            preface_left: PREFACE.len(),
            verbatim_left: 0,
            block: None,
            decoder: None,
        }
    }
}

#[derive(Debug)]
struct Block {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received (while sniffing, to pass them on unchanged).
    raw: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Front {
    /// Processes `input` into `output` as far as it can; returns how many input bytes were
    /// consumed and whether the connection passes through from here on.
    fn process(&mut self, input: &[u8], output: &mut Vec<u8>) -> io::Result<(usize, bool)> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            if self.preface_left > 0 {
                let start = PREFACE.len() - self.preface_left;
                let n = self.preface_left.min(rest.len());
                if rest[..n] != PREFACE[start..start + n] {
                    // Not HTTP/2 with prior knowledge: hyper answers it as it does.
                    return Ok((pos, true));
                }
                output.extend_from_slice(&rest[..n]);
                pos += n;
                self.preface_left -= n;
                if self.preface_left > 0 {
                    return Ok((pos, false));
                }
                continue;
            }
            if self.verbatim_left > 0 {
                let n = self.verbatim_left.min(rest.len());
                output.extend_from_slice(&rest[..n]);
                pos += n;
                self.verbatim_left -= n;
                if rest.len() == n {
                    return Ok((pos, false));
                }
                continue;
            }
            if rest.len() < FRAME_HEADER {
                return Ok((pos, false));
            }
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let ty = rest[3];
            let flags = rest[4];
            let stream_id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
            let in_block = self.block.is_some();
            if !(ty == HEADERS && !in_block || ty == CONTINUATION && in_block) {
                if in_block {
                    // RFC 9113 §6.10: nothing may interleave a header block.
                    return self.give_up(output, pos, "a frame inside a header block");
                }
                output.extend_from_slice(&rest[..FRAME_HEADER]);
                pos += FRAME_HEADER;
                self.verbatim_left = len;
                continue;
            }
            let collected = self.block.as_ref().map_or(0, |b| b.raw.len());
            if collected + FRAME_HEADER + len > MAX_BLOCK_BYTES {
                return self.give_up(output, pos, "a header block over the size limit");
            }
            if rest.len() < FRAME_HEADER + len {
                return Ok((pos, false));
            }
            let frame = &rest[..FRAME_HEADER + len];
            pos += frame.len();
            let payload = &frame[FRAME_HEADER..];
            let block = match self.block.as_mut() {
                Some(block) if block.stream_id == stream_id => {
                    block.fragment.extend_from_slice(payload);
                    block
                }
                Some(_) => {
                    return self.give_up(
                        output,
                        pos - frame.len(),
                        "a CONTINUATION of another stream",
                    );
                }
                None => {
                    let Some((priority, fragment)) = headers_fragment(flags, payload) else {
                        return self.give_up(
                            output,
                            pos - frame.len(),
                            "a malformed HEADERS frame",
                        );
                    };
                    self.block.insert(Block {
                        stream_id,
                        end_stream: flags & END_STREAM != 0,
                        priority,
                        fragment: fragment.to_vec(),
                        raw: Vec::new(),
                    })
                }
            };
            if self.decoder.is_none() {
                block.raw.extend_from_slice(frame);
            }
            if flags & END_HEADERS == 0 {
                continue;
            }
            let block = self.block.take().expect("a block is being collected");
            if self.finish_block(block, output)? {
                return Ok((pos, true));
            }
        }
    }

    /// Ends sniffing on input h2 must judge: what was collected goes on unchanged, then the
    /// rest. While rewriting that is impossible (the tables would part): the connection fails.
    fn give_up(
        &mut self,
        output: &mut Vec<u8>,
        pos: usize,
        what: &str,
    ) -> io::Result<(usize, bool)> {
        if self.decoder.is_some() {
            return Err(invalid(format!("HTTP/2: {what}")));
        }
        if let Some(block) = self.block.take() {
            output.extend_from_slice(&block.raw);
        }
        Ok((pos, true))
    }

    /// Decodes a complete block and writes it on: unchanged (then returns true: pass through
    /// from now on) or rewritten.
    fn finish_block(&mut self, block: Block, output: &mut Vec<u8>) -> io::Result<bool> {
        let mut fields = match self.decoder.as_mut() {
            Some(decoder) => decoder
                .decode(&block.fragment)
                .map_err(|e| invalid(e.to_string()))?,
            None => {
                let mut decoder = Decoder::new(HEADER_TABLE_SIZE, MAX_BLOCK_BYTES);
                match decoder.decode(&block.fragment) {
                    Ok(fields) if !needs_repair(&fields) => {
                        output.extend_from_slice(&block.raw);
                        return Ok(true);
                    }
                    Ok(fields) => {
                        self.decoder = Some(decoder);
                        fields
                    }
                    Err(_) => {
                        output.extend_from_slice(&block.raw);
                        return Ok(true);
                    }
                }
            }
        };
        repair(&mut fields);
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        hpack::encode(&fields, &mut encoded);
        write_block(&block, &encoded, output);
        Ok(false)
    }
}

/// The priority bytes and the header block fragment of a HEADERS frame's payload, without its
/// padding; `None` if the padding or priority does not fit.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(p.get(..5)?.try_into().ok()?);
        p = &p[5..];
    }
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

/// Writes `encoded` as the block of `block`'s stream: one HEADERS frame (its END_STREAM and
/// priority kept, no padding) and as many CONTINUATIONs as the frame size needs.
fn write_block(block: &Block, encoded: &[u8], output: &mut Vec<u8>) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let first_len = encoded.len().min(MAX_FRAME_PAYLOAD - prio_len);
    let (first, mut rest) = encoded.split_at(first_len);
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(
        output,
        prio_len + first.len(),
        HEADERS,
        flags,
        block.stream_id,
    );
    if let Some(priority) = block.priority {
        output.extend_from_slice(&priority);
    }
    output.extend_from_slice(first);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME_PAYLOAD);
        let flags = if n == rest.len() { END_HEADERS } else { 0 };
        frame_header(output, n, CONTINUATION, flags, block.stream_id);
        output.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

fn frame_header(output: &mut Vec<u8>, len: usize, ty: u8, flags: u8, stream_id: u32) {
    debug_assert!(len <= MAX_FRAME_PAYLOAD);
    output.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    output.push(ty);
    output.push(flags);
    output.extend_from_slice(&stream_id.to_be_bytes());
}

fn is_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn needs_repair(fields: &[Field]) -> bool {
    fields
        .iter()
        .any(|f| f.name == b":authority" && !is_authority(&f.value))
}

/// Replaces an `:authority` that is a URL by the URL's authority, and drops one that does not
/// contain an authority at all (h2 takes a request without one).
fn repair(fields: &mut Vec<Field>) {
    fields.retain_mut(|f| {
        if f.name != b":authority" || is_authority(&f.value) {
            return true;
        }
        match url_authority(&f.value) {
            Some(authority) => {
                f.value = authority.to_vec();
                true
            }
            None => false,
        }
    });
}

/// The authority part of `scheme://authority/path`, if it is one.
fn url_authority(value: &[u8]) -> Option<&[u8]> {
    let start = value.windows(3).position(|w| w == b"://")? + 3;
    let rest = &value[start..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let authority = &rest[..end];
    is_authority(authority).then_some(authority)
}

impl<IO: hyper::rt::Read + Unpin> hyper::rt::Read for AuthorityFront<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.out_pos);
                buf.put_slice(&this.output[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.output.len() {
                    this.output.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.front.is_none() || this.eof {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl<IO: hyper::rt::Write + Unpin> hyper::rt::Write for AuthorityFront<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpack::Indexing;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            indexing: Indexing::Normal,
        }
    }

    /// A client's bytes: preface, SETTINGS, then HEADERS frames of the given blocks (each
    /// encoded with incremental indexing of :authority, so later blocks refer to the table).
    fn client_bytes(authority: &str, requests: u32) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        frame_header(&mut out, 0, 0x4, 0, 0);
        for i in 0..requests {
            let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
            if i == 0 {
                // :authority with incremental indexing (static name index 1), then a path.
                block.push(0x41);
                block.push(authority.len() as u8);
                block.extend_from_slice(authority.as_bytes());
            } else {
                block.push(0xbe); // dynamic index 62: the :authority above
            }
            block.extend_from_slice(&[0x04, 0x05]);
            block.extend_from_slice(b"/a/b1");
            let stream_id = 1 + 2 * i;
            frame_header(&mut out, block.len(), HEADERS, END_HEADERS, stream_id);
            out.extend_from_slice(&block);
            frame_header(&mut out, 3, 0x0, END_STREAM, stream_id);
            out.extend_from_slice(b"abc");
        }
        out
    }

    /// Feeds `input` to a front end in pieces of `step` bytes; returns what reaches h2.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut front = AuthorityFront::new(());
        for chunk in input.chunks(step) {
            if front.front.is_none() {
                front.output.extend_from_slice(chunk);
                continue;
            }
            front.input.extend_from_slice(chunk);
            front.process().unwrap();
        }
        let rewriting = front.is_rewriting();
        (front.output, rewriting)
    }

    /// Parses `bytes` as h2 would: the preface, then frames; decodes header blocks with one
    /// decoder (h2's view of the connection).
    fn server_view(bytes: &[u8]) -> (Vec<Vec<Field>>, Vec<Vec<u8>>) {
        assert!(bytes.starts_with(PREFACE));
        let mut pos = PREFACE.len();
        let mut decoder = Decoder::new(HEADER_TABLE_SIZE, MAX_BLOCK_BYTES);
        let (mut blocks, mut data) = (Vec::new(), Vec::new());
        let mut pending = Vec::new();
        while pos < bytes.len() {
            let h = &bytes[pos..pos + FRAME_HEADER];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let payload = &bytes[pos + FRAME_HEADER..pos + FRAME_HEADER + len];
            match h[3] {
                HEADERS | CONTINUATION => {
                    let (_, fragment) = if h[3] == HEADERS {
                        headers_fragment(h[4], payload).unwrap()
                    } else {
                        (None, payload)
                    };
                    pending.extend_from_slice(fragment);
                    if h[4] & END_HEADERS != 0 {
                        blocks.push(decoder.decode(&pending).unwrap());
                        pending.clear();
                    }
                }
                0x0 => data.push(payload.to_vec()),
                _ => {}
            }
            pos += FRAME_HEADER + len;
        }
        (blocks, data)
    }

    #[test]
    fn a_valid_authority_passes_through_unchanged() {
        let input = client_bytes("127.0.0.1:2379", 3);
        for step in [1, 7, 64, input.len()] {
            let (output, rewriting) = run(&input, step);
            assert_eq!(output, input, "step {step}");
            assert!(!rewriting);
        }
    }

    #[test]
    fn a_url_authority_is_rewritten_on_every_request() {
        let input = client_bytes("http://127.0.0.1:2379", 3);
        for step in [1, 5, 100, input.len()] {
            let (output, rewriting) = run(&input, step);
            assert!(rewriting);
            let (blocks, data) = server_view(&output);
            assert_eq!(blocks.len(), 3);
            for block in &blocks {
                assert_eq!(
                    block,
                    &[
                        field(":method", "POST"),
                        field(":scheme", "http"),
                        field(":authority", "127.0.0.1:2379"),
                        field(":path", "/a/b1"),
                    ]
                );
            }
            assert_eq!(data, vec![b"abc".to_vec(); 3]);
        }
    }

    #[test]
    fn url_authorities_are_repaired_or_dropped() {
        let mut fields = vec![field(":authority", "https://[::1]:2379/x"), field("a", "b")];
        repair(&mut fields);
        assert_eq!(fields, [field(":authority", "[::1]:2379"), field("a", "b")]);
        let mut fields = vec![field(":authority", "unix:///tmp/sock"), field("a", "b")];
        repair(&mut fields);
        assert_eq!(fields, [field("a", "b")]);
        assert!(!needs_repair(&[field(":authority", "localhost:2379")]));
        assert!(needs_repair(&[field(
            ":authority",
            "http://localhost:2379"
        )]));
    }

    #[test]
    fn large_rewritten_blocks_are_split_into_continuations() {
        let mut block = vec![0x83, 0x86, 0x41, 0x15];
        block.extend_from_slice(b"http://127.0.0.1:2379");
        // A 40 KB custom header, literal without indexing, new name.
        block.extend_from_slice(&[0x00, 0x01, b'x', 0x7f]);
        let mut n = 40_000 - 127;
        while n >= 0x80 {
            block.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        block.push(n as u8);
        block.extend(std::iter::repeat_n(b'v', 40_000));
        let mut input = PREFACE.to_vec();
        // Sent as HEADERS + two CONTINUATIONs, the first with padding and priority.
        let chunks: Vec<&[u8]> = block.chunks(16_000).collect();
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(chunks[0]);
        payload.extend_from_slice(&[0, 0, 0]);
        frame_header(
            &mut input,
            payload.len(),
            HEADERS,
            PADDED | PRIORITY | END_STREAM,
            1,
        );
        input.extend_from_slice(&payload);
        for (i, chunk) in chunks[1..].iter().enumerate() {
            let flags = if i + 2 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            frame_header(&mut input, chunk.len(), CONTINUATION, flags, 1);
            input.extend_from_slice(chunk);
        }
        let (output, rewriting) = run(&input, 4096);
        assert!(rewriting);
        let (blocks, _) = server_view(&output);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0][2], field(":authority", "127.0.0.1:2379"));
        assert_eq!(blocks[0][3].value.len(), 40_000);
        // The first frame keeps END_STREAM and the priority; none is larger than allowed.
        let first = &output[PREFACE.len()..];
        assert_eq!(first[3], HEADERS);
        assert_eq!(first[4], END_STREAM | PRIORITY);
    }

    #[test]
    fn garbage_and_http1_pass_through_for_h2_to_refuse() {
        for input in [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            vec![0xff; 100],
            {
                let mut v = PREFACE.to_vec();
                // A HEADERS frame whose block is not HPACK, then a PING inside the block.
                frame_header(&mut v, 2, HEADERS, 0, 1);
                v.extend_from_slice(&[0xff, 0xff]);
                frame_header(&mut v, 8, 0x6, 0, 0);
                v.extend_from_slice(&[0; 8]);
                v
            },
        ] {
            let (output, rewriting) = run(&input, 3);
            assert_eq!(output, input);
            assert!(!rewriting);
        }
    }

    #[test]
    fn the_first_bytes_tell_http2_from_http1() {
        for (input, http2) in [
            (client_bytes("127.0.0.1:2379", 2), Some(true)),
            (client_bytes("http://127.0.0.1:2379", 2), Some(true)),
            (PREFACE[..10].to_vec(), None),
            (b"GET /health HTTP/1.1\r\n".to_vec(), Some(false)),
            (b"PUT".to_vec(), Some(false)),
        ] {
            let mut front = AuthorityFront::new(());
            front.input = input.clone();
            front.process().unwrap();
            assert_eq!(front.http2, http2, "{input:?}");
        }
    }

    #[test]
    fn a_bad_block_after_the_switch_fails_the_connection() {
        let mut input = client_bytes("http://127.0.0.1:2379", 1);
        frame_header(&mut input, 1, HEADERS, END_HEADERS, 3);
        input.push(0xc5); // dynamic index 69: no such entry
        let mut front = AuthorityFront::new(());
        front.input = input;
        assert_eq!(
            front.process().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
