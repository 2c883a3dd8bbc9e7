//! Splitting `/clusters/<name>/<kubernetes path>` and refusing path tricks.

use crate::registry::validate_cluster_name;

/// A front-listener path split into the cluster and the path the API server sees.
#[derive(Debug, PartialEq, Eq)]
pub struct ClusterPath<'a> {
    /// The registered cluster name.
    pub cluster: &'a str,
    /// The Kubernetes path, always starting with `/`.
    pub rest: &'a str,
}

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not under `/clusters/`.
    #[error("path is not under /clusters/<name>/")]
    NotClusterPath,
    /// The cluster segment is not a valid name.
    #[error("invalid cluster name in path: {0}")]
    BadCluster(String),
    /// The Kubernetes path has `.`/`..` segments or encoded slashes.
    #[error("path contains dot segments or encoded slashes")]
    Traversal,
}

/// Splits a raw (still percent-encoded) request path.
pub fn split(path: &str) -> Result<ClusterPath<'_>, PathError> {
    let after = path
        .strip_prefix("/clusters/")
        .ok_or(PathError::NotClusterPath)?;
    let (cluster, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    if cluster.contains('%') {
        return Err(PathError::BadCluster(
            "percent-encoding is not allowed in cluster names".into(),
        ));
    }
    validate_cluster_name(cluster).map_err(|e| PathError::BadCluster(e.to_string()))?;
    let lower = rest.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains('\\') {
        return Err(PathError::Traversal);
    }
    let dots = |seg: &str| {
        let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    };
    if rest.split('/').any(dots) {
        return Err(PathError::Traversal);
    }
    Ok(ClusterPath { cluster, rest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cluster_and_rest() {
        assert_eq!(
            split("/clusters/eu1/api/v1/pods").unwrap(),
            ClusterPath {
                cluster: "eu1",
                rest: "/api/v1/pods"
            }
        );
        assert_eq!(
            split("/clusters/eu1").unwrap(),
            ClusterPath {
                cluster: "eu1",
                rest: "/"
            }
        );
        assert_eq!(split("/clusters/eu1/").unwrap().rest, "/");
    }

    #[test]
    fn refuses_tricks() {
        assert_eq!(split("/api/v1/pods"), Err(PathError::NotClusterPath));
        assert!(matches!(
            split("/clusters//api"),
            Err(PathError::BadCluster(_))
        ));
        assert!(matches!(
            split("/clusters/../api"),
            Err(PathError::BadCluster(_))
        ));
        assert!(matches!(
            split("/clusters/./api"),
            Err(PathError::BadCluster(_))
        ));
        assert!(matches!(
            split("/clusters/eu1%2Fapi/x"),
            Err(PathError::BadCluster(_))
        ));
        assert!(matches!(
            split("/clusters/EU1/api"),
            Err(PathError::BadCluster(_))
        ));
        assert_eq!(
            split("/clusters/eu1/api/%2e%2e/x"),
            Err(PathError::Traversal)
        );
        assert_eq!(split("/clusters/eu1/../eu2/api"), Err(PathError::Traversal));
        assert_eq!(split("/clusters/eu1/api%2fv1"), Err(PathError::Traversal));
    }
}
