//! The shim's wire protocol (see `berth/shim/v1/shim.proto`): one unix stream connection per
//! call, one length-prefixed `RpcRequest` frame in, one `RpcResponse` frame out (a stream of
//! them for Events). Plain blocking I/O on a thread per connection: a shim serves one
//! container and a handful of calls, so an async runtime and an HTTP/2 stack would only add
//! resident memory to every container.

use std::io::{self, Read, Write};

use berth_proto::berth::shim::v1::{RpcRequest, RpcResponse};
use prost::Message;

/// Largest frame accepted (a request or a response).
pub const MAX_FRAME: usize = 16 << 20;

/// gRPC status codes, as the shim reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Code {
    InvalidArgument = 3,
    NotFound = 5,
    AlreadyExists = 6,
    FailedPrecondition = 9,
    Aborted = 10,
    Unimplemented = 12,
    Internal = 13,
}

/// A failed call: a gRPC code and a message.
#[derive(Debug, Clone)]
pub struct Status {
    pub code: i32,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code: code as i32, message: message.into() }
    }
    pub fn invalid_argument(m: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, m)
    }
    pub fn not_found(m: impl Into<String>) -> Status {
        Status::new(Code::NotFound, m)
    }
    pub fn already_exists(m: impl Into<String>) -> Status {
        Status::new(Code::AlreadyExists, m)
    }
    pub fn failed_precondition(m: impl Into<String>) -> Status {
        Status::new(Code::FailedPrecondition, m)
    }
    pub fn aborted(m: impl Into<String>) -> Status {
        Status::new(Code::Aborted, m)
    }
    pub fn internal(m: impl Into<String>) -> Status {
        Status::new(Code::Internal, m)
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream before the length.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes is too large")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// Writes one frame holding `msg`.
pub fn write_frame(w: &mut impl Write, msg: &impl Message) -> io::Result<()> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    w.write_all(&out)
}

/// Reads the request of a connection.
pub fn read_request(r: &mut impl Read) -> Result<RpcRequest, Status> {
    let frame = read_frame(r)
        .map_err(|e| Status::invalid_argument(format!("read request: {e}")))?
        .ok_or_else(|| Status::invalid_argument("connection closed before a request"))?;
    RpcRequest::decode(frame.as_slice()).map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
}

/// Decodes a request payload.
pub fn decode<M: Message + Default>(payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| Status::invalid_argument(format!("malformed {}: {e}", std::any::type_name::<M>())))
}

/// The response frame for a result.
pub fn response(result: Result<Vec<u8>, Status>) -> RpcResponse {
    match result {
        Ok(payload) => RpcResponse { code: 0, message: String::new(), payload },
        Err(s) => RpcResponse { code: s.code, message: s.message, payload: Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let req = RpcRequest { method: "State".into(), payload: vec![1, 2, 3] };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        assert_eq!(&buf[..4], &(buf.len() as u32 - 4).to_be_bytes());
        let got = read_request(&mut buf.as_slice()).unwrap();
        assert_eq!(got.method, "State");
        assert_eq!(got.payload, vec![1, 2, 3]);
        // A clean end of stream before a frame is None; a torn frame is an error.
        assert!(read_frame(&mut [].as_slice()).unwrap().is_none());
        assert!(read_frame(&mut buf[..6].as_ref()).is_err());
        // A length over the limit is refused before allocating.
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(read_frame(&mut huge.as_slice()).unwrap_err().kind(), io::ErrorKind::InvalidData);
        // Garbage is a clear InvalidArgument.
        let mut bad = Vec::new();
        bad.extend_from_slice(&3u32.to_be_bytes());
        bad.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(read_request(&mut bad.as_slice()).unwrap_err().code, Code::InvalidArgument as i32);
    }
}
