//! berthd's client of a shim's task API. The shim does not speak gRPC (see the transport
//! note in `berth/shim/v1/shim.proto`): each call opens a unix stream connection to
//! `shim.sock`, writes one length-prefixed `RpcRequest` and reads one `RpcResponse` (a
//! stream of them for Events). Methods mirror a tonic client's so callers stay the same.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::berth::shim::v1::*;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tonic::{Code, Response, Status};

/// Largest frame accepted from a shim.
const MAX_FRAME: usize = 16 << 20;

/// A client of one shim. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShimClient {
    socket: Arc<PathBuf>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("shim {what}: {e}"))
}

async fn write_frame(conn: &mut UnixStream, msg: &impl Message) -> std::io::Result<()> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    conn.write_all(&out).await
}

/// Reads one frame; `Ok(None)` when the shim closed the connection before one.
async fn read_frame(conn: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match conn.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    conn.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Turns a response frame into the payload, or the shim's error.
fn payload(frame: &[u8]) -> Result<Vec<u8>, Status> {
    let resp = RpcResponse::decode(frame).map_err(|e| Status::internal(format!("malformed shim response: {e}")))?;
    if resp.code != 0 {
        return Err(Status::new(Code::from_i32(resp.code), resp.message));
    }
    Ok(resp.payload)
}

fn decode<M: Message + Default>(payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| Status::internal(format!("malformed shim response: {e}")))
}

/// The events a shim streams.
pub struct EventStream {
    conn: UnixStream,
}

impl EventStream {
    /// The next event; None when the shim closed the stream.
    pub async fn message(&mut self) -> Result<Option<Event>, Status> {
        match read_frame(&mut self.conn).await.map_err(|e| unavailable("events", e))? {
            None => Ok(None),
            Some(frame) => Ok(Some(decode(&payload(&frame)?)?)),
        }
    }
}

macro_rules! calls {
    ($($(#[$doc:meta])* $fn:ident($req:ty) -> $resp:ty = $method:literal;)*) => {
        $(
            $(#[$doc])*
            pub async fn $fn(&mut self, req: $req) -> Result<Response<$resp>, Status> {
                self.call($method, &req).await.map(Response::new)
            }
        )*
    };
}

impl ShimClient {
    /// A client of the shim listening at `socket`.
    pub fn new(socket: &Path) -> ShimClient {
        ShimClient { socket: Arc::new(socket.to_path_buf()) }
    }

    async fn open(&self, method: &str, req: &impl Message) -> Result<UnixStream, Status> {
        let mut conn = UnixStream::connect(self.socket.as_path()).await.map_err(|e| unavailable("connect", e))?;
        let frame = RpcRequest { method: method.into(), payload: req.encode_to_vec() };
        write_frame(&mut conn, &frame).await.map_err(|e| unavailable(method, e))?;
        Ok(conn)
    }

    async fn call<Resp: Message + Default>(&self, method: &str, req: &impl Message) -> Result<Resp, Status> {
        let mut conn = self.open(method, req).await?;
        let frame = read_frame(&mut conn)
            .await
            .map_err(|e| unavailable(method, e))?
            .ok_or_else(|| Status::unavailable(format!("shim closed the connection during {method}")))?;
        decode(&payload(&frame)?)
    }

    calls! {
        /// State of the init (empty exec id) or of an exec.
        state(StateRequest) -> StateResponse = "State";
        /// Creates the container and its init.
        create(CreateTaskRequest) -> CreateTaskResponse = "Create";
        /// Starts the init or an exec.
        start(StartRequest) -> StartResponse = "Start";
        /// Deletes the init (and the container) or an exec.
        delete(DeleteRequest) -> DeleteResponse = "Delete";
        /// The container's processes.
        pids(PidsRequest) -> PidsResponse = "Pids";
        /// Freezes the container.
        pause(PauseRequest) -> () = "Pause";
        /// Thaws the container.
        resume(ResumeRequest) -> () = "Resume";
        /// Signals the init (or all processes) or an exec.
        kill(KillRequest) -> () = "Kill";
        /// Resizes a terminal.
        resize_pty(ResizePtyRequest) -> () = "ResizePty";
        /// Closes a process's stdin.
        close_io(CloseIoRequest) -> () = "CloseIO";
        /// Waits for a process to exit.
        wait(WaitRequest) -> WaitResponse = "Wait";
        /// cgroup statistics.
        stats(StatsRequest) -> StatsResponse = "Stats";
        /// The shim's pid and version, and the task's pid.
        connect(ConnectRequest) -> ConnectResponse = "Connect";
        /// Stops the shim.
        shutdown(ShutdownRequest) -> () = "Shutdown";
        /// Drops the queued events up to `seq`.
        ack_events(AckEventsRequest) -> () = "AckEvents";
    }

    /// Adds an exec process. The spec must be an OCI process (checked here, so a bad one
    /// fails at Exec rather than at Start).
    pub async fn exec(&mut self, req: ExecProcessRequest) -> Result<Response<()>, Status> {
        if let Some(spec) = &req.spec {
            serde_json::from_slice::<oci_spec::runtime::Process>(&spec.value)
                .map_err(|e| Status::invalid_argument(format!("exec spec is not an OCI process: {e}")))?;
        }
        self.call("Exec", &req).await.map(Response::new)
    }

    /// Updates the container's resources (an OCI LinuxResources, checked here).
    pub async fn update(&mut self, req: UpdateTaskRequest) -> Result<Response<()>, Status> {
        if let Some(any) = &req.resources {
            serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&any.value)
                .map_err(|e| Status::invalid_argument(format!("resources are not OCI LinuxResources: {e}")))?;
        }
        self.call("Update", &req).await.map(Response::new)
    }

    /// The shim's queued events, then new ones as they happen.
    pub async fn events(&mut self, req: EventsRequest) -> Result<Response<EventStream>, Status> {
        let conn = self.open("Events", &req).await?;
        Ok(Response::new(EventStream { conn }))
    }
}
