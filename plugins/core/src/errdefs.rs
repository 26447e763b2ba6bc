//! The small set of error kinds every plugin reports; each maps one-to-one to a gRPC code at
//! the service boundary (and later to an HTTP status in the Docker gateway).

use std::fmt;

/// What went wrong, independent of the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named object does not exist.
    NotFound,
    /// An object with that name already exists.
    AlreadyExists,
    /// The request is malformed: bad name, bad filter, bad field path.
    InvalidArgument,
    /// The system is not in a state that allows the request (e.g. namespace not empty).
    FailedPrecondition,
    /// A resource is busy or temporarily unreachable; retrying may help.
    Unavailable,
    /// The operation is not implemented by this daemon.
    NotImplemented,
    /// Anything else: I/O errors, corrupt metadata.
    Internal,
}

impl ErrorKind {
    /// Lower-case words used in messages, as containerd's errdefs print them.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not implemented",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error of a given kind with a human-readable message that names the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }
    /// [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// [`ErrorKind::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    /// [`ErrorKind::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    /// [`ErrorKind::FailedPrecondition`].
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    /// [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// [`ErrorKind::NotImplemented`].
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotImplemented, message)
    }
    /// [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The message without the kind suffix.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefixes the message with context, keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error { kind: self.kind, message: format!("{context}: {}", self.message) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // containerd formats wrapped errdefs as "<context>: <kind>"; clients grep for it.
        write!(f, "{}: {}", self.message, self.kind.as_str())
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(err.to_string()),
            std::io::ErrorKind::AlreadyExists => Error::already_exists(err.to_string()),
            _ => Error::internal(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_kind_and_context() {
        let err = Error::not_found("namespace \"x\"").context("get");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "get: namespace \"x\": not found");
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(Error::from(nf).kind(), ErrorKind::NotFound);
        let other = std::io::Error::other("disk on fire");
        assert_eq!(Error::from(other).kind(), ErrorKind::Internal);
    }
}
