//! Routing plugin: picks the healthiest, nearest candidate and fails over when it is
//! unhealthy.
//!
//! Candidates for the request's cluster (all candidates when the request names none)
//! are ranked by, in order: health (healthy, degraded, unhealthy), weight 0 last
//! ("fallback only": used when no weighted candidate is as healthy), locality relative
//! to this process (same zone, same region, elsewhere), then load
//! (`in-flight / weight`). When the best is unhealthy the request is denied
//! with 503 unless `allow_unhealthy` is set.
//!
//! ```toml
//! [stage.config]
//! region = "eu-west-1"     # where this process runs
//! zone = "eu-west-1a"
//! allow_unhealthy = false
//! route_header = "x-hawser-route"   # optional; the stage policy must allow it
//! ```

#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hawser_plugin_sdk::{
    export_plugin, Candidate, Config, Denial, Health, Plugin, Principal, RequestHead, RouteChoice,
    Routing,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Cfg {
    region: String,
    zone: String,
    allow_unhealthy: bool,
    route_header: Option<String>,
}

/// The plugin: this process's locality and the failover rule.
pub struct LocalityRoute(Cfg);

impl Plugin for LocalityRoute {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(LocalityRoute(config.parse()?))
    }

    // Routing uses the candidates only.
    fn request_headers(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

impl LocalityRoute {
    fn rank(&self, c: &Candidate) -> (u8, bool, u8, u64) {
        let health = match c.health {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Unhealthy => 2,
        };
        let distance = if !self.0.zone.is_empty() && c.locality.zone == self.0.zone {
            0
        } else if !self.0.region.is_empty() && c.locality.region == self.0.region {
            1
        } else {
            2
        };
        // Load per unit of weight, scaled to stay an integer.
        let load = u64::from(c.in_flight) * 1000 / u64::from(c.weight.max(1));
        (health, c.weight == 0, distance, load)
    }
}

impl Routing for LocalityRoute {
    fn route(
        &self,
        req: &RequestHead,
        _who: Option<&Principal>,
        candidates: &[Candidate],
    ) -> Result<Option<RouteChoice>, Denial> {
        let best = candidates
            .iter()
            .filter(|c| req.cluster.is_empty() || c.cluster == req.cluster)
            .min_by_key(|c| self.rank(c))
            .ok_or_else(|| {
                Denial::not_found(format!("no endpoint for cluster {:?}", req.cluster))
            })?;
        if best.health == Health::Unhealthy && !self.0.allow_unhealthy {
            return Err(Denial::unavailable(format!(
                "no healthy endpoint for cluster {:?}",
                best.cluster
            )));
        }
        let mut choice = RouteChoice::to(best);
        if let Some(h) = &self.0.route_header {
            choice = choice.with_header(h, format!("{}/{}", best.cluster, best.endpoint));
        }
        Ok(Some(choice))
    }
}

export_plugin!(LocalityRoute: routing; no_std);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use hawser_plugin_sdk::testing::{candidate, request};

    fn plugin() -> LocalityRoute {
        LocalityRoute::init(&Config::from_json(r#"{"region":"eu","zone":"eu-a"}"#)).unwrap()
    }

    #[test]
    fn prefers_nearest_healthy_and_fails_over() {
        let mut cands = vec![
            candidate("c", "far", "us", "us-a", Health::Healthy),
            candidate("c", "region", "eu", "eu-b", Health::Healthy),
            candidate("c", "zone", "eu", "eu-a", Health::Healthy),
        ];
        let r = |cands: &[Candidate]| plugin().route(&request("/", &[]), None, cands);
        assert_eq!(r(&cands).unwrap().unwrap().endpoint, "zone");
        cands[2].health = Health::Unhealthy;
        assert_eq!(r(&cands).unwrap().unwrap().endpoint, "region");
        cands[1].health = Health::Degraded;
        assert_eq!(r(&cands).unwrap().unwrap().endpoint, "far");
        cands[0].health = Health::Unhealthy;
        assert_eq!(
            r(&cands).unwrap().unwrap().endpoint,
            "region",
            "degraded beats unhealthy"
        );
        cands[1].health = Health::Unhealthy;
        assert!(r(&cands).is_err(), "all unhealthy: 503");
    }

    #[test]
    fn a_weight_0_fallback_serves_only_when_no_weighted_candidate_is_as_healthy() {
        let mut cands = vec![
            candidate("c", "near-fallback", "eu", "eu-a", Health::Healthy),
            candidate("c", "far", "us", "us-a", Health::Healthy),
        ];
        cands[0].weight = 0;
        let r = |cands: &[Candidate]| plugin().route(&request("/", &[]), None, cands);
        assert_eq!(r(&cands).unwrap().unwrap().endpoint, "far");
        cands[1].health = Health::Degraded;
        assert_eq!(r(&cands).unwrap().unwrap().endpoint, "near-fallback");
    }

    #[test]
    fn only_the_requested_cluster() {
        let cands = [
            candidate("a", "a1", "eu", "eu-a", Health::Healthy),
            candidate("b", "b1", "us", "us-a", Health::Healthy),
        ];
        let mut req = request("/", &[]);
        req.cluster = "b".into();
        assert_eq!(
            plugin()
                .route(&req, None, &cands)
                .unwrap()
                .unwrap()
                .endpoint,
            "b1"
        );
        req.cluster = "zzz".into();
        assert!(plugin().route(&req, None, &cands).is_err());
    }
}
