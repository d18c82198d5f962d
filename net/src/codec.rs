//! The gRPC codec of every generated service and client (`net/build.rs` names it): prost's, but
//! the encoder sizes the output buffer for the whole message before writing it.
//!
//! Why: tonic hands the encoder a `BytesMut` that starts at 8 KiB and grows as prost writes, so a
//! large message (a 500-key page of a list, a 100 KiB value) was copied once per doubling, into
//! fresh pages that the kernel zeroes first. One `reserve` of the encoded length (prost computes
//! it from the message's fields without writing anything) makes it one allocation and one copy.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// prost's codec with a pre-sized encode buffer; decoding is prost's own.
#[derive(Debug)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> SizedEncoder<T> {
        SizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> ProstDecoder<U> {
        ProstDecoder::default()
    }
}

/// Encodes one message into a buffer reserved for all of it.
#[derive(Debug)]
pub struct SizedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let len = item.encoded_len();
        buf.reserve(len);
        item.encode(buf)
            .map_err(|e| Status::internal(format!("retcd: encoding a {len}-byte message: {e}")))
    }
}
