//! The answers to pgveil's own probe of the current role ([`super::expect::PROBE_SQL`]): read
//! here, never forwarded (but for what the server sends unasked: ParameterStatus, notifications).
use super::expect::Expect;
use super::server::ServerToClient;
use crate::protocol::backend::{error_code, parameter_status};
use crate::protocol::encoding::ClientEncoding;

impl ServerToClient<'_> {
    /// Whether the answers now are the probe's.
    pub(super) fn probing(&mut self) -> bool {
        matches!(self.answers.front(), Some(Expect::Probe { .. }))
    }

    /// One frame answering the probe; `true`: it goes to the client (it was not the probe's).
    pub(super) fn probe_answer(&mut self, tag: u8, body: &[u8]) -> bool {
        match tag {
            b'D' => {
                let role = first_value(body, self.shared.encoding().unwrap_or_default());
                if let Some(Expect::Probe { role: r, .. }) = self.answers.front() {
                    *r = role;
                }
                false
            }
            b'E' => {
                let code = error_code(body).unwrap_or("XX000").to_string();
                if let Some(Expect::Probe { error, .. }) = self.answers.front() {
                    *error = Some(code);
                }
                false
            }
            b'Z' => {
                if let Some(Expect::Probe { role, error }) = self.answers.pop() {
                    let answer = match (role, error) {
                        (Some(r), None) => Ok(r),
                        (_, Some(e)) => Err(e),
                        (None, None) => Err("no row".into()),
                    };
                    self.shared.probe_answered(answer);
                }
                if body.first() == Some(&b'I') {
                    self.shared.transaction_ended();
                }
                self.answers.cycle_ended();
                self.shared.barrier_done();
                false
            }
            b'S' => {
                if let Some((n, v)) = parameter_status(body) {
                    self.shared.apply(&n, &v);
                }
                true
            }
            b'A' => true,
            // RowDescription, CommandComplete, notices of the probe itself.
            _ => false,
        }
    }
}

/// The first value of a DataRow, as text in the client encoding `enc` (`None` for NULL or a
/// malformed row).
fn first_value(body: &[u8], enc: ClientEncoding) -> Option<String> {
    let n = i16::from_be_bytes(body.get(0..2)?.try_into().ok()?);
    if n < 1 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    let v = body.get(6..6 + len)?;
    enc.decode(v).ok().map(|t| t.into_owned())
}

#[cfg(test)]
mod tests {
    use super::first_value;
    use crate::protocol::encoding::ClientEncoding::{Gbk, Utf8};

    #[test]
    fn the_first_value_of_a_row() {
        let mut row = vec![0, 1, 0, 0, 0, 5];
        row.extend_from_slice(b"alice");
        assert_eq!(first_value(&row, Utf8).as_deref(), Some("alice"));
        let mut row = vec![0, 1, 0, 0, 0, 2];
        row.extend_from_slice(b"\xd6\xd0");
        assert_eq!(first_value(&row, Gbk).as_deref(), Some("中"));
        assert_eq!(first_value(&row, Utf8), None);
        assert_eq!(first_value(&[0, 1, 0xff, 0xff, 0xff, 0xff], Utf8), None);
        assert_eq!(first_value(&[0, 1, 0, 0, 0, 9, b'x'], Utf8), None);
        assert_eq!(first_value(&[0, 0], Utf8), None);
        assert_eq!(first_value(&[], Utf8), None);
    }
}
