//! The few protobuf messages a BuildKit build exchanges with the engine, read and written
//! by hand: the build's progress (`moby.buildkit.v1.StatusResponse`) and the tiny gRPC
//! messages the build session serves (health, secrets). A general protobuf crate would
//! bring a code generator and a dozen crates for five messages.
//! Invariant: reading never panics on any input; a malformed message is `None`, and
//! fields this reader does not know are skipped, so a newer engine's extra fields are
//! harmless.

/// Wire types of protobuf encoding.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

/// One field of a message: its number and its value as the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
    /// A fixed-width number (its value is not needed by any message read here).
    Fixed(u32),
}

/// The fields of one encoded message, in order; `None` when it is malformed.
pub fn fields(mut message: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut fields = Vec::new();
    while !message.is_empty() {
        let key = read_varint(&mut message)?;
        let number = u32::try_from(key >> 3).ok()?;
        let field = match (key & 7) as u8 {
            VARINT => Field::Varint(number, read_varint(&mut message)?),
            LENGTH_DELIMITED => {
                let len = usize::try_from(read_varint(&mut message)?).ok()?;
                if len > message.len() {
                    return None;
                }
                let (bytes, rest) = message.split_at(len);
                message = rest;
                Field::Bytes(number, bytes)
            }
            FIXED64 => {
                message = message.get(8..)?;
                Field::Fixed(number)
            }
            FIXED32 => {
                message = message.get(4..)?;
                Field::Fixed(number)
            }
            // Groups (3, 4) are long deprecated and never used by these messages.
            _ => return None,
        };
        fields.push(field);
    }
    Some(fields)
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Builds an encoded message field by field.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn varint(mut self, number: u32, value: u64) -> Self {
        write_varint(&mut self.bytes, u64::from(number) << 3 | u64::from(VARINT));
        write_varint(&mut self.bytes, value);
        self
    }

    pub fn bytes(mut self, number: u32, value: &[u8]) -> Self {
        write_varint(
            &mut self.bytes,
            u64::from(number) << 3 | u64::from(LENGTH_DELIMITED),
        );
        write_varint(&mut self.bytes, value.len() as u64);
        self.bytes.extend_from_slice(value);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// One vertex of the build graph (a step, or a base image's resolution) as a status
/// update reports it; an update carries only what changed, so most fields may be unset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Vertex {
    pub digest: String,
    pub name: String,
    pub cached: bool,
    pub started: bool,
    pub completed: bool,
    pub error: String,
}

/// Output a step wrote (1: stdout, 2: stderr).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VertexLog {
    pub vertex: String,
    pub stream: u64,
    pub msg: Vec<u8>,
}

/// Progress of a vertex's sub-task (a layer's download, an export); `name` says what.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VertexStatus {
    pub id: String,
    pub vertex: String,
    pub name: String,
    pub current: i64,
    pub total: i64,
    pub completed: bool,
}

/// `moby.buildkit.v1.StatusResponse`: what changed in the build since the last one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    pub vertexes: Vec<Vertex>,
    pub statuses: Vec<VertexStatus>,
    pub logs: Vec<VertexLog>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl StatusResponse {
    pub fn decode(message: &[u8]) -> Option<Self> {
        let mut response = Self::default();
        for field in fields(message)? {
            match field {
                Field::Bytes(1, vertex) => response.vertexes.push(Vertex::decode(vertex)?),
                Field::Bytes(2, status) => response.statuses.push(VertexStatus::decode(status)?),
                Field::Bytes(3, log) => response.logs.push(VertexLog::decode(log)?),
                Field::Varint(..) | Field::Bytes(..) | Field::Fixed(_) => {}
            }
        }
        Some(response)
    }
}

impl Vertex {
    fn decode(message: &[u8]) -> Option<Self> {
        let mut vertex = Self::default();
        for field in fields(message)? {
            match field {
                Field::Bytes(1, digest) => vertex.digest = text(digest),
                Field::Bytes(3, name) => vertex.name = text(name),
                Field::Varint(4, cached) => vertex.cached = cached != 0,
                Field::Bytes(5, _) => vertex.started = true,
                Field::Bytes(6, _) => vertex.completed = true,
                Field::Bytes(7, error) => vertex.error = text(error),
                Field::Varint(..) | Field::Bytes(..) | Field::Fixed(_) => {}
            }
        }
        Some(vertex)
    }
}

impl VertexStatus {
    fn decode(message: &[u8]) -> Option<Self> {
        let mut status = Self::default();
        for field in fields(message)? {
            match field {
                Field::Bytes(1, id) => status.id = text(id),
                Field::Bytes(2, vertex) => status.vertex = text(vertex),
                Field::Bytes(3, name) => status.name = text(name),
                Field::Varint(4, current) => status.current = current as i64,
                Field::Varint(5, total) => status.total = total as i64,
                Field::Bytes(8, _) => status.completed = true,
                Field::Varint(..) | Field::Bytes(..) | Field::Fixed(_) => {}
            }
        }
        Some(status)
    }
}

impl VertexLog {
    fn decode(message: &[u8]) -> Option<Self> {
        let mut log = Self::default();
        for field in fields(message)? {
            match field {
                Field::Bytes(1, vertex) => log.vertex = text(vertex),
                Field::Varint(3, stream) => log.stream = stream,
                Field::Bytes(4, msg) => log.msg = msg.to_vec(),
                Field::Varint(..) | Field::Bytes(..) | Field::Fixed(_) => {}
            }
        }
        Some(log)
    }
}

/// The host a `moby.filesync.v1.CredentialsRequest` asks a login for (its field 1, as
/// the secret request's id is).
pub fn credentials_request_host(message: &[u8]) -> Option<String> {
    secret_request_id(message)
}

/// A `moby.filesync.v1.CredentialsResponse`: empty fields mean "no login" (anonymous).
pub fn credentials_response(username: &str, secret: &str) -> Vec<u8> {
    let mut writer = Writer::default();
    if !username.is_empty() {
        writer = writer.bytes(1, username.as_bytes());
    }
    if !secret.is_empty() {
        writer = writer.bytes(2, secret.as_bytes());
    }
    writer.finish()
}

/// The id a `moby.buildkit.secrets.v1.GetSecretRequest` asks for.
pub fn secret_request_id(message: &[u8]) -> Option<String> {
    let mut id = String::new();
    for field in fields(message)? {
        match field {
            Field::Bytes(1, value) => id = String::from_utf8(value.to_vec()).ok()?,
            Field::Varint(..) | Field::Bytes(..) | Field::Fixed(_) => {}
        }
    }
    Some(id)
}

/// A `moby.buildkit.secrets.v1.GetSecretResponse` carrying `data`.
pub fn secret_response(data: &[u8]) -> Vec<u8> {
    Writer::default().bytes(1, data).finish()
}

/// A `grpc.health.v1.HealthCheckResponse` saying SERVING (1).
pub fn health_serving() -> Vec<u8> {
    Writer::default().varint(1, 1).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timestamp message (seconds, nanos), as a vertex's `started` carries it.
    fn timestamp() -> Vec<u8> {
        Writer::default()
            .varint(1, 1_700_000_000)
            .varint(2, 5)
            .finish()
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let encoded = Writer::default().varint(9, value).finish();
            assert_eq!(
                fields(&encoded),
                Some(vec![Field::Varint(9, value)]),
                "{value}"
            );
        }
    }

    #[test]
    fn a_status_response_decodes_vertexes_statuses_and_logs() {
        let vertex = Writer::default()
            .bytes(1, b"sha256:aaa")
            .bytes(2, b"sha256:input")
            .bytes(3, b"[build 2/4] RUN make")
            .varint(4, 1)
            .bytes(5, &timestamp())
            .bytes(6, &timestamp())
            .bytes(7, b"exit code: 2")
            // A field a newer engine might add (a progress group): skipped.
            .bytes(8, &Writer::default().bytes(1, b"group").finish())
            .finish();
        let status = Writer::default()
            .bytes(1, b"extracting sha256:bbb")
            .bytes(2, b"sha256:aaa")
            .varint(4, 512)
            .varint(5, 1024)
            .bytes(6, &timestamp())
            .finish();
        let log = Writer::default()
            .bytes(1, b"sha256:aaa")
            .bytes(2, &timestamp())
            .varint(3, 2)
            .bytes(4, b"compiling\n")
            .finish();
        let response = Writer::default()
            .bytes(1, &vertex)
            .bytes(2, &status)
            .bytes(3, &log)
            .bytes(4, b"a warning, skipped")
            .finish();
        let decoded = StatusResponse::decode(&response).unwrap();
        assert_eq!(
            decoded.vertexes,
            vec![Vertex {
                digest: "sha256:aaa".into(),
                name: "[build 2/4] RUN make".into(),
                cached: true,
                started: true,
                completed: true,
                error: "exit code: 2".into(),
            }]
        );
        assert_eq!(
            decoded.statuses,
            vec![VertexStatus {
                id: "extracting sha256:bbb".into(),
                vertex: "sha256:aaa".into(),
                name: String::new(),
                current: 512,
                total: 1024,
                completed: false,
            }]
        );
        assert_eq!(
            decoded.logs,
            vec![VertexLog {
                vertex: "sha256:aaa".into(),
                stream: 2,
                msg: b"compiling\n".to_vec(),
            }]
        );
        assert_eq!(StatusResponse::decode(&[]), Some(StatusResponse::default()));
    }

    #[test]
    fn malformed_messages_are_none_never_a_panic() {
        let good = Writer::default().bytes(3, b"name").finish();
        for cut in 0..good.len() {
            // Every proper prefix of a length-delimited field is malformed, except none.
            let prefix = &good[..cut];
            assert_eq!(fields(prefix).is_none(), cut != 0, "{prefix:?}");
        }
        for bad in [
            &[0x0a, 0xff][..],             // a length beyond the message
            &[0x0b][..],                   // wire type 3 (a group)
            &[0x08, 0xff, 0xff][..],       // a varint that never ends
            &[0x80; 11][..],               // a key longer than any varint
            &[0x09, 1, 2, 3][..],          // a fixed64 cut short
            &[0x0a, 0x02, 0x0a, 0xff][..], // a vertex whose inside is malformed
        ] {
            assert!(StatusResponse::decode(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn session_messages_encode_as_grpc_defines_them() {
        // HealthCheckResponse { status: SERVING }.
        assert_eq!(health_serving(), vec![0x08, 0x01]);
        // GetSecretResponse { data: "hi" }.
        assert_eq!(secret_response(b"hi"), vec![0x0a, 0x02, b'h', b'i']);
        // GetSecretRequest { ID: "token", annotations: {...} }.
        let request = Writer::default()
            .bytes(1, b"token")
            .bytes(2, &Writer::default().bytes(1, b"k").bytes(2, b"v").finish())
            .finish();
        assert_eq!(secret_request_id(&request).as_deref(), Some("token"));
        assert_eq!(secret_request_id(&[]).as_deref(), Some(""));
        assert_eq!(secret_request_id(&[0x0a, 0x01, 0xff]), None);
        // CredentialsRequest { Host } and CredentialsResponse { Username, Secret }.
        let request = Writer::default().bytes(1, b"127.0.0.1:5000").finish();
        assert_eq!(
            credentials_request_host(&request).as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            credentials_response("me", "pw"),
            vec![0x0a, 0x02, b'm', b'e', 0x12, 0x02, b'p', b'w']
        );
        assert_eq!(credentials_response("", ""), Vec::<u8>::new());
    }
}
