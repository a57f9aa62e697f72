//! DRF-style page-number pagination: `?page=N`, 50 a page,
//! `{count, next, previous, results}` with absolute links.

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::header::HOST;
use axum::http::request::Parts;
use serde::Serialize;

use crate::error::ApiError;

pub const PAGE_SIZE: i64 = 50;
/// The highest page number whose offset fits an `i64`.
const MAX_PAGE: i64 = i64::MAX / PAGE_SIZE;

#[derive(Debug, Clone)]
pub struct PageRequest {
    pub page: i64,
    base_url: String,
    other_query: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<T>,
}

impl PageRequest {
    pub fn limit(&self) -> i64 {
        PAGE_SIZE
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * PAGE_SIZE
    }

    /// Wraps one page of results. A page past the end is a 404, as in DRF,
    /// except the first page of an empty collection.
    pub fn into_page<T>(self, count: i64, results: Vec<T>) -> Result<Page<T>, ApiError> {
        let last_page = ((count + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        if self.page > last_page {
            return Err(ApiError::NotFound);
        }
        let next = (self.page < last_page).then(|| self.link(self.page + 1));
        let previous = (self.page > 1).then(|| self.link(self.page - 1));
        Ok(Page { count, next, previous, results })
    }

    fn link(&self, page: i64) -> String {
        let mut query: Vec<String> =
            self.other_query.iter().map(|(key, value)| format!("{}={}", encode(key), encode(value))).collect();
        if page > 1 {
            query.push(format!("page={page}"));
        }
        if query.is_empty() {
            self.base_url.clone()
        } else {
            format!("{}?{}", self.base_url, query.join("&"))
        }
    }
}

/// Percent-encodes a query component (RFC 3986 unreserved characters kept).
pub fn encode(component: &str) -> String {
    component
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A query string's `key=value` pairs, decoded, in order; a key given
/// twice (`?symbols=A&symbols=B`) appears twice.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(component: &str) -> String {
    fn hex(byte: u8) -> Option<u8> {
        (byte as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<S: Send + Sync> FromRequestParts<S> for PageRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map(|OriginalUri(uri)| uri.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let mut page = 1;
        let mut other_query = Vec::new();
        for (key, value) in query_pairs(uri.query()) {
            if key == "page" {
                // Past the last page is a 404 (below); a number no page
                // could have, or whose offset would overflow, is the
                // client's mistake.
                page = value.parse::<i64>().ok().filter(|p| (1..=MAX_PAGE).contains(p)).ok_or_else(|| {
                    ApiError::bad_request(format!("page must be a whole number from 1 to {MAX_PAGE}"))
                })?;
            } else {
                other_query.push((key, value));
            }
        }
        let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        let scheme = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|proto| *proto == "https")
            .unwrap_or("http");
        Ok(PageRequest { page, base_url: format!("{scheme}://{host}{}", uri.path()), other_query })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(page: i64) -> PageRequest {
        PageRequest { page, base_url: "http://h/api/x/".into(), other_query: vec![("search".into(), "a b".into())] }
    }

    #[test]
    fn links_keep_other_filters_and_point_at_neighbours() {
        let page = request(2).into_page(120, vec![(); 50]).unwrap();
        assert_eq!(page.next.as_deref(), Some("http://h/api/x/?search=a%20b&page=3"));
        assert_eq!(page.previous.as_deref(), Some("http://h/api/x/?search=a%20b"));
    }

    #[test]
    fn an_empty_collection_has_a_first_page_and_nothing_past_it() {
        let page = request(1).into_page::<()>(0, vec![]).unwrap();
        assert_eq!((page.count, page.next, page.previous), (0, None, None));
        assert!(request(2).into_page::<()>(0, vec![]).is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%E2%82%AC%zz"), "€%zz");
    }
}
