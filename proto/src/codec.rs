//! The codec every relay.v1 service and client uses: prost's, except that a
//! message that is not valid protobuf becomes `MALFORMED_MESSAGE` (with the
//! message type and prost's description) instead of a bare INTERNAL status,
//! so a peer that sends garbage is told exactly that.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::Reason;

/// Initial capacity of a call's encode and decode buffers; tonic's default
/// is 8 KiB each. An agent session holds one of each for as long as it
/// lives, idle nearly all that time, so at 8 KiB they were a third of the
/// broker's memory per idle session. A larger message grows its buffer (the
/// decoder reserves the announced length at once).
const BUFFER_SIZE: usize = 1024;
/// tonic's default: how much a streaming response encodes before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// Generated services and clients name this codec (see build.rs).
#[derive(Debug, Clone)]
pub struct RelayCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for RelayCodec<T, U> {
    fn default() -> Self {
        RelayCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for RelayCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RelayDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RelayDecoder {
            inner: ProstDecoder::new(buffer_settings()),
        }
    }
}

/// prost's decoder with the relay's error for undecodable bytes.
#[derive(Debug, Clone)]
pub struct RelayDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default> Decoder for RelayDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| {
            let type_name = std::any::type_name::<U>()
                .rsplit("::")
                .next()
                .unwrap_or("message");
            crate::status(
                Reason::MalformedMessage,
                format!(
                    "the {type_name} message is not valid protobuf: {}",
                    status.message()
                ),
                &[("message_type", type_name.to_owned())],
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
