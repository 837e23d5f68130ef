//! Where Stepwise lives in its server's URL space: the root (the `stepwise` binary) or a path
//! an application chose for it (`/stepwise`). Every URL Stepwise makes for a client (pages,
//! `Location` headers, links in notifications, the OpenAPI document's server, requests
//! carried to another server of the cluster) starts with it.

use std::fmt;
use std::sync::Arc;

/// A mount path: empty for the root, else `/` and segments of URL-safe characters, no
/// trailing `/` (so that `mount.join("/api/tasks")` is always one well-formed path).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountPath(Arc<str>);

/// Why a mount path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mount path {path:?}: {reason}")]
pub struct MountPathError {
    /// The path given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl MountPath {
    /// The root: Stepwise's URLs are its own (`/api/tasks`, `/tasks/{id}`).
    pub fn root() -> MountPath {
        MountPath::default()
    }

    /// A mount path such as `/stepwise` or `/tools/steps`; `/` and `` are the root, and one
    /// trailing `/` is dropped. Segments take letters, digits and `-._~` only (nothing that
    /// needs escaping in a URL or in HTML), and are never `.` or `..`.
    pub fn new(path: &str) -> Result<MountPath, MountPathError> {
        let refuse = |reason| Err(MountPathError { path: path.to_owned(), reason });
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        if trimmed.is_empty() {
            return Ok(MountPath::root());
        }
        let Some(segments) = trimmed.strip_prefix('/') else { return refuse("it must start with /") };
        for segment in segments.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return refuse("it has an empty, `.` or `..` segment");
            }
            if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
                return refuse("segments take letters, digits and -._~ only");
            }
        }
        Ok(MountPath(trimmed.into()))
    }

    /// The path itself: `""` for the root, else e.g. `/stepwise`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// `path` (which starts with `/`) under this mount path: `/stepwise` + `/api/tasks`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// A path the router matched (`HttpRequest::match_pattern`, which includes the mount
    /// path) as Stepwise's own route pattern.
    pub fn strip<'a>(&self, path: &'a str) -> &'a str {
        path.strip_prefix(&*self.0).unwrap_or(path)
    }
}

impl fmt::Display for MountPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_path_is_the_root_or_slash_and_plain_segments() {
        for (given, kept) in [("", ""), ("/", ""), ("/stepwise", "/stepwise"), ("/a/b-c_d.e~f/", "/a/b-c_d.e~f")] {
            assert_eq!(MountPath::new(given).map(|m| m.as_str().to_owned()), Ok(kept.to_owned()), "{given:?}");
        }
        for (given, reason) in [
            ("stepwise", "it must start with /"),
            ("//", "it has an empty, `.` or `..` segment"),
            ("/a//b", "it has an empty, `.` or `..` segment"),
            ("/a/../b", "it has an empty, `.` or `..` segment"),
            ("/a b", "segments take letters, digits and -._~ only"),
            ("/a\"><script>", "segments take letters, digits and -._~ only"),
            ("/a?b", "segments take letters, digits and -._~ only"),
        ] {
            assert_eq!(MountPath::new(given), Err(MountPathError { path: given.to_owned(), reason }), "{given:?}");
        }
        let mount = MountPath::new("/stepwise").unwrap();
        assert_eq!(mount.join("/api/tasks"), "/stepwise/api/tasks");
        assert_eq!(mount.strip("/stepwise/api/tasks"), "/api/tasks");
        assert_eq!(MountPath::root().join("/api/tasks"), "/api/tasks");
        assert!(MountPath::new("/").unwrap().is_root());
    }
}
