//! Length-prefixed wire messages on QUIC streams (`switchy_protocol::wire`
//! frames: a 4-byte length, then the payload, at most `wire::MAX_FRAME`).

use crate::FrameError;
use switchy_protocol::wire;

/// Reads one message.
pub async fn read_frame<T: for<'de> serde::Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
) -> Result<T, FrameError> {
    read_frame_into(recv, &mut Vec::new()).await
}

/// As [`read_frame`], reusing `buf` for the payload.
pub async fn read_frame_into<T: for<'de> serde::Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
    buf: &mut Vec<u8>,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let n = wire::frame_len(len, wire::MAX_FRAME)?;
    buf.resize(n, 0);
    recv.read_exact(&mut buf[..n]).await?;
    Ok(wire::decode(&buf[..n])?)
}

/// Writes one message.
pub async fn write_frame<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), FrameError> {
    let bytes = wire::encode(msg)?;
    send.write_all(&bytes).await?;
    Ok(())
}
