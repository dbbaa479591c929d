//! Cursor pagination shared by every list: opaque cursors over a table's sequence number.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use crate::error::Error;

/// One page of a list and the cursor to the next one, if there is more.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A validated request for a page: where to start and how many items.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// The sequence number the page starts after (exclusive), if any.
    pub after: Option<i64>,
    pub limit: u32,
}

impl PageRequest {
    /// Parses `limit` and `cursor` query parameters; `limit` defaults to `default` and may
    /// not exceed `max`.
    pub fn parse(
        limit: Option<u32>,
        cursor: Option<&str>,
        default: u32,
        max: u32,
    ) -> Result<Self, Error> {
        let limit = limit.unwrap_or(default);
        if limit == 0 || limit > max {
            return Err(Error::BadRequest(format!(
                "limit must be between 1 and {max}, got {limit}"
            )));
        }
        let after = cursor.map(decode_cursor).transpose()?;
        Ok(Self { after, limit })
    }

    /// Splits rows fetched with `limit + 1` into a page, keyed by sequence number.
    pub fn finish<T>(self, mut rows: Vec<(i64, T)>) -> Page<T> {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next_cursor = if more {
            rows.last().map(|(seq, _)| encode_cursor(*seq))
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(|(_, item)| item).collect(),
            next_cursor,
        }
    }
}

fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("s{seq}"))
}

fn decode_cursor(cursor: &str) -> Result<i64, Error> {
    let invalid = || {
        Error::BadRequest(
            "cursor is invalid; pass the `nextCursor` value of the previous page unchanged"
                .to_owned(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    text.strip_prefix('s')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_rejected() {
        let cursor = encode_cursor(42);
        assert_eq!(decode_cursor(&cursor).unwrap(), 42);
        for bad in ["", "!!", "eDQy", &URL_SAFE_NO_PAD.encode("s-1")] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(PageRequest::parse(None, None, 50, 200).unwrap().limit, 50);
        assert!(PageRequest::parse(Some(0), None, 50, 200).is_err());
        assert!(PageRequest::parse(Some(201), None, 50, 200).is_err());
    }

    #[test]
    fn finish_sets_the_next_cursor_only_when_more_rows_exist() {
        let request = PageRequest {
            after: None,
            limit: 2,
        };
        let page = request.finish(vec![(1, 'a'), (2, 'b'), (3, 'c')]);
        assert_eq!(page.items, vec!['a', 'b']);
        assert_eq!(
            decode_cursor(page.next_cursor.as_deref().unwrap()).unwrap(),
            2
        );
        let page = request.finish(vec![(1, 'a')]);
        assert!(page.next_cursor.is_none());
    }
}
