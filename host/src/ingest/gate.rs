//! The admission gate: everything an agent request must pass before the engine sees it, in
//! one place and one order.
//!
//! [`Gate::admit`] takes a whole `POST /v1/agent/heartbeat` request and returns either an
//! [`Admitted`] heartbeat for the writer or the [`Refusal`] to answer; [`Gate::admit_rotation`]
//! does the same for `POST /v1/agent/rotate-key`. The steps, for both:
//!
//! 1. **source**: the client address ([`client_ip`]) and its token bucket;
//! 2. **body**: read up to the route's cap;
//! 3. **decode**: the wire contract ([`decode`] or [`rotation::decode`]);
//! 4. **identity**: the claimed server, through [`Servers::identity`] (which also asks the
//!    shared database when several hosts share it); open registration for an unknown server
//!    that offers a key ([`registration`]);
//! 5. **key version** and the **signed message**;
//! 6. **signature**: on the batching [`Verifier`] thread, off the async executor;
//! 7. **server bucket**: only once the request proved itself (a valid signature, or none
//!    required), so a forgery spends its source's bucket and never the server's;
//! 8. **clock skew** ([`within_skew`], the one copy of that rule);
//! 9. the route's own last rules (`require_verified`; a rotation's next key must be new).
//!
//! Every refusal but a rate limit is logged and handed to [`Servers::record_rejection`] (the
//! audit row, folded into the server's policy when it is known) before the gate returns it; a
//! rate-limited request costs no write. What needs a server's history (replay, exact repeats,
//! sequence numbers) is the writer's job, after the gate.
//!
//! `POST /v1/agent/heartbeats` (many heartbeats in one request) runs steps 3 to 9 per item:
//! see `batch.rs` ([`Gate::admit_batch`]).
//!
//! The gate never imports the engine: it asks for what it needs through the narrow
//! [`Servers`] trait, which the engine implements. A new way in (a token instead of a
//! signature) is one more admission method here that reuses these steps, not a second
//! pipeline.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use sha2::Digest as _;

use super::client_ip::client_ip;
use super::decode::{DecodedHeartbeat, MAX_BODY_BYTES, decode};
use super::limits::{Limited, RateLimits, RegistrationLimits};
use super::signature::{PublicKey, parse_signature, signed_message};
use super::verified::{Identity, RejectionNotice, VerifiedHeartbeat};
use super::verifier::Verifier;
use super::{Refusal, TrustRules, registration, rotation};
use crate::clock::now_ms;
use crate::config::ConfigHandle;
use crate::config::access::Registration;
use crate::store::NewServer;
use crate::store::{AuthKind, KeyRotation, TokenKind};

mod batch;
pub use batch::{MAX_BATCH_BODY_BYTES, MAX_BATCH_ITEMS, split_items};

/// What the gate asks of the engine about servers. Implemented by the engine (and by tests
/// with a fixed set of servers).
#[async_trait]
pub trait Servers: Send + Sync + 'static {
    /// The identity of a registered server, `None` if it is unknown.
    async fn identity(&self, server_id: &str) -> Option<Arc<Identity>>;
    /// Registers a server from its first heartbeat (open registration): `Ok(true)` when it
    /// did, `Ok(false)` when another request registered it first.
    async fn register(&self, server: NewServer) -> Result<bool, Refusal>;
    /// Appends a refusal to the audit trail (and folds it, when it names a known server).
    async fn record_rejection(&self, notice: RejectionNotice);
    /// The server an active ingest token of `kind` with this hex SHA-256 speaks for; `None`
    /// when no active token matches (unknown or revoked).
    async fn token_owner(
        &self,
        kind: TokenKind,
        token_sha256: &str,
    ) -> Result<Option<String>, Refusal>;
    /// The name of the active `ingest`-scoped API key `presented` is; `None` when it is no
    /// such key (unknown, revoked, another scope).
    async fn ingest_key(&self, presented: &str) -> Result<Option<String>, Refusal>;
}

/// A compat request's credential: a per-server ingest token of one kind.
#[derive(Debug, Clone, Copy)]
pub struct TokenClaim<'t> {
    /// Which route family the token belongs to (a ping token opens no push route).
    pub kind: TokenKind,
    /// The token as presented.
    pub token: &'t str,
}

/// A heartbeat the gate let through, for the writer.
#[derive(Debug)]
pub struct Admitted {
    /// The heartbeat.
    pub heartbeat: VerifiedHeartbeat,
    /// Whether this heartbeat registered its server (open registration).
    pub server_registered: bool,
}

/// The admission gate (cheap to clone).
#[derive(Clone)]
pub struct Gate {
    config: ConfigHandle,
    /// Token buckets per client address and per server; shared by every clone.
    limits: Arc<RateLimits>,
    /// The hourly caps on open registrations; shared by every clone.
    registrations: Arc<RegistrationLimits>,
    verifier: Verifier,
    servers: Arc<dyn Servers>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Who sent a request, and when it arrived.
struct Source {
    ip: Option<IpAddr>,
    received_at_ms: i64,
}

impl Source {
    fn text(&self) -> Option<String> {
        self.ip.map(|a| a.to_string())
    }
}

impl Gate {
    /// A gate reading its rules from `config` on every request.
    pub fn new(config: ConfigHandle, verifier: Verifier, servers: Arc<dyn Servers>) -> Self {
        Self {
            config,
            limits: Arc::default(),
            registrations: Arc::default(),
            verifier,
            servers,
        }
    }

    /// Charges one request to its source's budget (the per-IP bucket), nothing else: the
    /// admin routes and the command-result route call this before they look at a credential,
    /// so a request that proves nothing costs only its own address's budget.
    pub fn charge_source(&self, request: &Request) -> Result<(), Refusal> {
        self.source(request, 0).map(drop)
    }

    /// [`Gate::charge_source`], answering the client address it charged (the TCP peer, or
    /// what a trusted proxy vouches for; `None` without connection info).
    pub fn charge_source_ip(&self, request: &Request) -> Result<Option<IpAddr>, Refusal> {
        self.source(request, 0).map(|source| source.ip)
    }

    /// Admits one `POST /v1/agent/heartbeat` request at the host clock's now.
    pub async fn admit(&self, request: Request) -> Result<Admitted, Refusal> {
        self.admit_at(request, now_ms()).await
    }

    /// [`Gate::admit`] with the receive time given (the conformance vectors' timestamps are
    /// old; tests pass their time here instead of loosening the rules).
    pub async fn admit_at(
        &self,
        request: Request,
        received_at_ms: i64,
    ) -> Result<Admitted, Refusal> {
        let config = self.config.current();
        let rules = TrustRules::from(&config.trust);
        let source = self.source(&request, received_at_ms)?;
        let bytes = self.body(request, MAX_BODY_BYTES, &source).await?;
        let decoded = match decode(&bytes) {
            Ok(decoded) => decoded,
            Err(e) => return Err(self.refused(e.into(), &source, Some(&bytes)).await),
        };
        let result = self
            .heartbeat(decoded, &bytes, &source, rules, config.trust.registration)
            .await;
        match result {
            Ok(admitted) => Ok(admitted),
            Err(Step::Limited(refusal)) => Err(refusal),
            Err(Step::Refused(refusal)) => Err(self.refused(refusal, &source, Some(&bytes)).await),
        }
    }

    /// Steps 4 to 9 of a heartbeat.
    async fn heartbeat(
        &self,
        decoded: DecodedHeartbeat,
        bytes: &[u8],
        source: &Source,
        rules: TrustRules,
        registration_mode: Registration,
    ) -> Result<Admitted, Step> {
        let server_id = decoded.server_id.clone();
        let mut identity = self.servers.identity(&server_id).await;
        let opens = identity.is_none()
            && registration_mode == Registration::Open
            && decoded.public_key.is_some();
        let mut server_registered = false;
        if opens {
            server_registered = self.open_registration(&decoded, source, rules).await?;
            identity = self.servers.identity(&server_id).await;
        }
        let Some(identity) = identity else {
            let detail = format!("server `{server_id}` is not registered");
            return Err(refusal(&decoded, 404, "unknown_server", detail).into());
        };
        if decoded.key_version != identity.key_version {
            let detail = format!(
                "heartbeat is signed with key version {}, the server's current key is version {}",
                decoded.key_version, identity.key_version
            );
            return Err(refusal(&decoded, 409, "key_version_mismatch", detail).into());
        }
        let signed = match decoded.signature.as_deref() {
            // A signature that is present must verify, whether or not one is required.
            Some(text) => {
                let signature = parse_signature(text)
                    .map_err(|e| refusal(&decoded, 401, "bad_signature", e.to_string()))?;
                let message = signed_message(&decoded.body)
                    .map_err(|e| refusal(&decoded, 401, "bad_signature", e.to_string()))?;
                if !self
                    .verify(&identity.public_key, message, signature, &server_id, source)
                    .await
                {
                    return Err(refusal(
                        &decoded,
                        401,
                        "bad_signature",
                        "signature does not verify against the server's key (signed message: \
                         `vigil-heartbeat-v1\\n` + JCS of the body without `signature`)"
                            .into(),
                    )
                    .into());
                }
                true
            }
            None if rules.require_signature => {
                let detail = "member `signature` is required ([trust] require_signature)".into();
                return Err(refusal(&decoded, 422, "missing_field", detail).into());
            }
            None => false,
        };
        // Only now, with the signature proven (or not required), may the request spend the
        // server's budget: a forgery costs its source's bucket alone.
        self.server_bucket(&server_id, source)?;
        within_skew(decoded.sent_at_ms, source.received_at_ms, rules, &server_id)?;
        if rules.require_verified && !identity.is_verified {
            let detail = format!("server `{server_id}` is not verified by an operator yet");
            return Err(refusal(&decoded, 403, "server_unverified", detail).into());
        }
        Ok(Admitted {
            heartbeat: VerifiedHeartbeat {
                body_text: String::from_utf8_lossy(bytes).into_owned(),
                decoded,
                received_at_ms: source.received_at_ms,
                signed,
                auth: if signed {
                    AuthKind::Signature
                } else {
                    AuthKind::Network
                },
                original_body: None,
                source_ip: source.text(),
            },
            server_registered,
        })
    }

    /// Admits one compat request that proves itself with an ingest token (a Healthchecks
    /// ping, an Uptime Kuma push). The credential is checked first: the source's bucket, then
    /// the token (an unknown or revoked one is refused 404 `unknown_token` and recorded
    /// without the token or the body, so it costs the source's bucket and one bounded row);
    /// only then the server's bucket and the body (at most `cap` bytes). `map` turns the body
    /// into the v1 members the policy reads (`status`, `run`, `metrics`, `payload`); the gate
    /// adds `server_id`, the server's `key_version` and the receive time as `timestamp`, and
    /// the result passes the v1 decode like any heartbeat (so replay reads it back). The
    /// heartbeat is unsigned (`auth: token`): the default policy never grants it green, and
    /// it moves no replay clock.
    pub async fn admit_token<F>(
        &self,
        request: Request,
        claim: TokenClaim<'_>,
        cap: usize,
        map: F,
    ) -> Result<Admitted, Refusal>
    where
        F: FnOnce(&[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Refusal>,
    {
        self.admit_token_at(request, claim, cap, now_ms(), map)
            .await
    }

    /// [`Gate::admit_token`] with the receive time given.
    pub async fn admit_token_at<F>(
        &self,
        request: Request,
        claim: TokenClaim<'_>,
        cap: usize,
        received_at_ms: i64,
        map: F,
    ) -> Result<Admitted, Refusal>
    where
        F: FnOnce(&[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Refusal>,
    {
        let config = self.config.current();
        let rules = TrustRules::from(&config.trust);
        let source = self.source(&request, received_at_ms)?;
        let hash = hex::encode(sha2::Sha256::digest(claim.token.as_bytes()));
        let Some(server_id) = self.servers.token_owner(claim.kind, &hash).await? else {
            // Neither the token nor the body is kept: a mistyped token is still a secret.
            let detail = format!("no active {} token matches", claim.kind.as_str());
            let refusal = Refusal::new(404, "unknown_token", detail, None);
            return Err(self.refused(refusal, &source, None).await);
        };
        let Some(identity) = self.servers.identity(&server_id).await else {
            let detail = format!("server `{server_id}` is not registered");
            let refusal = Refusal::new(404, "unknown_server", detail, Some(&server_id));
            return Err(self.refused(refusal, &source, None).await);
        };
        // The token proved the request: from here it may spend the server's budget.
        if let Err(Step::Limited(refusal) | Step::Refused(refusal)) =
            self.server_bucket(&server_id, &source)
        {
            return Err(refusal);
        }
        let bytes = self.body(request, cap, &source).await?;
        let refuse =
            |refusal: Refusal| async { Err(self.refused(refusal, &source, Some(&bytes)).await) };
        if rules.require_verified && !identity.is_verified {
            let detail = format!("server `{server_id}` is not verified by an operator yet");
            return refuse(Refusal::new(
                403,
                "server_unverified",
                detail,
                Some(&server_id),
            ))
            .await;
        }
        let body = match map(&bytes) {
            Ok(body) => body,
            Err(mut refusal) => {
                refusal.claimed_server_id = Some(server_id.clone());
                return refuse(refusal).await;
            }
        };
        let heartbeat = v1_of(body, &identity, &bytes, &source, AuthKind::Token);
        match heartbeat {
            Ok(heartbeat) => Ok(Admitted {
                heartbeat,
                server_registered: false,
            }),
            Err(refusal) => refuse(refusal).await,
        }
    }

    /// Admits one compat request that proves itself with a shared API key of the `ingest`
    /// scope (HomelabCmd's `X-API-Key`), naming its server in the body. The key is checked
    /// first (after the source's bucket; a wrong or revoked key is refused 401
    /// `unknown_api_key` and recorded without the key or the body); then the body (at most
    /// `cap` bytes) is read and `map` validates it and names the server and its v1 members.
    /// An unknown server is refused 404 unless `auto_register`: then it is registered,
    /// unverified, within `[trust]`'s hourly registration caps, with a fresh key whose secret
    /// nobody keeps (the operator sets the agent's own key when it moves to signatures). Then
    /// the server's bucket, and the heartbeat as [`Gate::admit_token`] builds it (`auth:
    /// api_key`).
    pub async fn admit_api_key_at<F>(
        &self,
        request: Request,
        key: &str,
        cap: usize,
        received_at_ms: i64,
        auto_register: bool,
        map: F,
    ) -> Result<Admitted, Refusal>
    where
        F: FnOnce(&[u8]) -> Result<(String, serde_json::Map<String, serde_json::Value>), Refusal>,
    {
        let config = self.config.current();
        let rules = TrustRules::from(&config.trust);
        let source = self.source(&request, received_at_ms)?;
        let Some(key_name) = self.servers.ingest_key(key).await? else {
            let refusal = Refusal::new(
                401,
                "unknown_api_key",
                "no active API key of the `ingest` scope matches",
                None,
            );
            return Err(self.refused(refusal, &source, None).await);
        };
        let bytes = self.body(request, cap, &source).await?;
        let refuse =
            |refusal: Refusal| async { Err(self.refused(refusal, &source, Some(&bytes)).await) };
        let (server_id, body) = match map(&bytes) {
            Ok(mapped) => mapped,
            Err(refusal) => return refuse(refusal).await,
        };
        let mut server_registered = false;
        let mut identity = self.servers.identity(&server_id).await;
        if identity.is_none() && auto_register {
            let registered = self
                .register_unproven(
                    &server_id,
                    &source,
                    None,
                    None,
                    format!("homelabcmd:key:{key_name}"),
                )
                .await?;
            server_registered = registered;
            identity = self.servers.identity(&server_id).await;
        }
        let Some(identity) = identity else {
            let detail = format!("server `{server_id}` is not registered");
            return refuse(Refusal::new(
                404,
                "unknown_server",
                detail,
                Some(&server_id),
            ))
            .await;
        };
        if let Err(Step::Limited(refusal) | Step::Refused(refusal)) =
            self.server_bucket(&server_id, &source)
        {
            return Err(refusal);
        }
        if rules.require_verified && !identity.is_verified {
            let detail = format!("server `{server_id}` is not verified by an operator yet");
            return refuse(Refusal::new(
                403,
                "server_unverified",
                detail,
                Some(&server_id),
            ))
            .await;
        }
        match v1_of(body, &identity, &bytes, &source, AuthKind::ApiKey) {
            Ok(heartbeat) => Ok(Admitted {
                heartbeat,
                server_registered,
            }),
            Err(refusal) => refuse(refusal).await,
        }
    }

    /// Registers an unknown server a compat credential (an ingest key, a trusted network)
    /// vouches for: unverified, within `[trust]`'s hourly registration caps, with a fresh key
    /// whose secret nobody keeps (the operator sets the agent's own key when it moves to
    /// signatures). `Ok(true)` when it registered, `Ok(false)` when another request did first.
    async fn register_unproven(
        &self,
        server_id: &str,
        source: &Source,
        cluster_id: Option<String>,
        display_name: Option<String>,
        added_by: String,
    ) -> Result<bool, Refusal> {
        let trust = &self.config.current().trust;
        if let Err(wait) = self.registrations.check(
            trust.registrations_per_ip_per_hour,
            trust.registrations_per_hour,
            source.ip,
        ) {
            return Err(Refusal {
                retry_after: Some(wait),
                ..Refusal::new(
                    429,
                    "registration_limited",
                    "too many registrations from this address or this host in the last hour",
                    Some(server_id),
                )
            });
        }
        let key = super::signature::public_key_of(&ed25519_dalek::SigningKey::generate(
            &mut rand::rngs::OsRng,
        ));
        let server = NewServer {
            server_id: server_id.to_owned(),
            public_key: key.to_base64(),
            fingerprint: key.fingerprint(),
            display_name,
            cluster_id,
            registered_at_ms: source.received_at_ms,
            added_by: added_by.clone(),
        };
        let registered = self.servers.register(server).await?;
        if registered {
            tracing::info!(target: "vigil::audit", server_id = ?server_id, by = %added_by, "server registered by a compat credential");
        }
        Ok(registered)
    }

    /// Admits one compat request whose only credential is where it comes from (a PAP agent,
    /// `[compat.pap] allow_from`): the source's bucket, then its address against
    /// `allow_from` (outside it: 403 `forbidden_source`, recorded without the body); then the
    /// body (at most `cap` bytes) and `map`, which validates it into the v1 members; an
    /// unknown `server_id` is registered unverified into `register_into` (cluster id and
    /// display name), within `[trust]`'s hourly registration caps; then the server's bucket,
    /// and the heartbeat as [`Gate::admit_token`] builds it (`auth: network`).
    #[allow(clippy::too_many_arguments)]
    pub async fn admit_network_at<F>(
        &self,
        request: Request,
        server_id: &str,
        allow_from: &[ipnet::IpNet],
        register_into: Option<&str>,
        cap: usize,
        received_at_ms: i64,
        map: F,
    ) -> Result<Admitted, Refusal>
    where
        F: FnOnce(
            &[u8],
        )
            -> Result<(Option<String>, serde_json::Map<String, serde_json::Value>), Refusal>,
    {
        let config = self.config.current();
        let rules = TrustRules::from(&config.trust);
        let source = self.source(&request, received_at_ms)?;
        if !source
            .ip
            .is_some_and(|ip| allow_from.iter().any(|net| net.contains(&ip)))
        {
            let refusal = Refusal::new(
                403,
                "forbidden_source",
                "this client address is not in the route's allowed networks",
                None,
            );
            return Err(self.refused(refusal, &source, None).await);
        }
        if !super::decode::valid_server_id(server_id) {
            let refusal = Refusal::new(
                400,
                "invalid_field",
                "the agent id must match ^[a-z0-9][a-z0-9._-]{0,127}$ or be a lowercase UUID",
                None,
            );
            return Err(self.refused(refusal, &source, None).await);
        }
        let bytes = self.body(request, cap, &source).await?;
        let refuse =
            |refusal: Refusal| async { Err(self.refused(refusal, &source, Some(&bytes)).await) };
        let (display_name, body) = match map(&bytes) {
            Ok(mapped) => mapped,
            Err(mut refusal) => {
                refusal.claimed_server_id = Some(server_id.to_owned());
                return refuse(refusal).await;
            }
        };
        let mut server_registered = false;
        let mut identity = self.servers.identity(server_id).await;
        if identity.is_none()
            && let Some(cluster_id) = register_into
        {
            server_registered = self
                .register_unproven(
                    server_id,
                    &source,
                    Some(cluster_id.to_owned()),
                    display_name,
                    "pap:network".to_owned(),
                )
                .await?;
            identity = self.servers.identity(server_id).await;
        }
        let Some(identity) = identity else {
            let detail = format!("server `{server_id}` is not registered");
            return refuse(Refusal::new(404, "unknown_server", detail, Some(server_id))).await;
        };
        if let Err(Step::Limited(refusal) | Step::Refused(refusal)) =
            self.server_bucket(server_id, &source)
        {
            return Err(refusal);
        }
        if rules.require_verified && !identity.is_verified {
            let detail = format!("server `{server_id}` is not verified by an operator yet");
            return refuse(Refusal::new(
                403,
                "server_unverified",
                detail,
                Some(server_id),
            ))
            .await;
        }
        match v1_of(body, &identity, &bytes, &source, AuthKind::Network) {
            Ok(heartbeat) => Ok(Admitted {
                heartbeat,
                server_registered,
            }),
            Err(refusal) => refuse(refusal).await,
        }
    }

    /// Registers an unknown server from a first heartbeat signed by the key it offers.
    async fn open_registration(
        &self,
        decoded: &DecodedHeartbeat,
        source: &Source,
        rules: TrustRules,
    ) -> Result<bool, Step> {
        let (key, message, signature) = registration::offered_key(decoded)?;
        if !self
            .verify(&key, message, signature, &decoded.server_id, source)
            .await
        {
            let detail = "signature does not verify against the offered `public_key`".into();
            return Err(refusal(decoded, 401, "bad_signature", detail).into());
        }
        within_skew(
            decoded.sent_at_ms,
            source.received_at_ms,
            rules,
            &decoded.server_id,
        )?;
        // Keys cost nothing to make and each registration is stored for good: a proven key
        // still registers only within its address's (and the host's) hourly allowance.
        let trust = &self.config.current().trust;
        self.registrations
            .check(
                trust.registrations_per_ip_per_hour,
                trust.registrations_per_hour,
                source.ip,
            )
            .map_err(|wait| {
                tracing::info!(target: "vigil::audit", source_ip = ?source.ip, "open registration over the hourly cap");
                Step::Limited(Refusal {
                    retry_after: Some(wait),
                    ..Refusal::new(
                        429,
                        "registration_limited",
                        "too many open registrations from this address or this host in the last \
                         hour ([trust] registrations_per_ip_per_hour, registrations_per_hour); \
                         retry later",
                        None,
                    )
                })
            })?;
        self.server_bucket(&decoded.server_id, source)?;
        let server = NewServer {
            server_id: decoded.server_id.clone(),
            public_key: key.to_base64(),
            fingerprint: key.fingerprint(),
            display_name: None,
            cluster_id: None,
            registered_at_ms: source.received_at_ms,
            added_by: "open-registration".into(),
        };
        Ok(self.servers.register(server).await?)
    }

    /// Admits one `POST /v1/agent/rotate-key` request: the key rotation it asks for.
    pub async fn admit_rotation(&self, request: Request) -> Result<KeyRotation, Refusal> {
        self.admit_rotation_at(request, now_ms()).await
    }

    /// [`Gate::admit_rotation`] with the receive time given.
    pub async fn admit_rotation_at(
        &self,
        request: Request,
        received_at_ms: i64,
    ) -> Result<KeyRotation, Refusal> {
        let config = self.config.current();
        let rules = TrustRules::from(&config.trust);
        let source = self.source(&request, received_at_ms)?;
        let bytes = self
            .body(request, rotation::MAX_BODY_BYTES, &source)
            .await?;
        match self.rotation(&bytes, &source, rules).await {
            Ok(rotation) => Ok(rotation),
            Err(Step::Limited(refusal)) => Err(refusal),
            Err(Step::Refused(refusal)) => Err(self.refused(refusal, &source, Some(&bytes)).await),
        }
    }

    /// Steps 3 to 9 of a rotation.
    async fn rotation(
        &self,
        bytes: &[u8],
        source: &Source,
        rules: TrustRules,
    ) -> Result<KeyRotation, Step> {
        let request = rotation::decode(bytes)?;
        let server_id = request.server_id.as_str();
        let Some(identity) = self.servers.identity(server_id).await else {
            let detail = format!("server `{server_id}` is not registered");
            return Err(Refusal::new(404, "unknown_server", detail, Some(server_id)).into());
        };
        let (message, signature) = rotation::signed_parts(&request, &identity)?;
        if !self
            .verify(&identity.public_key, message, signature, server_id, source)
            .await
        {
            return Err(Refusal::new(
                401,
                "bad_signature",
                "signature does not verify against the server's current key (signed message: \
                 `vigil-rotate-key-v1\\n` + JCS of the body without `signature`)",
                Some(server_id),
            )
            .into());
        }
        self.server_bucket(server_id, source)?;
        within_skew(request.sent_at_ms, source.received_at_ms, rules, server_id)?;
        rotation::next_key_is_new(&request, &identity)?;
        Ok(KeyRotation {
            server_id: request.server_id.clone(),
            expected_version: request.key_version,
            public_key: request.next_public_key.to_base64(),
            fingerprint: request.next_public_key.fingerprint(),
            added_at_ms: source.received_at_ms,
            added_by: "agent".into(),
        })
    }

    /// Step 1: the client address and its bucket.
    fn source(&self, request: &Request, received_at_ms: i64) -> Result<Source, Refusal> {
        let config = self.config.current();
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let ip = client_ip(peer, request.headers(), &config.server.trusted_proxies);
        if let Some(addr) = ip
            && let Err(l) = self.limits.check_ip(&config.rate_limit, addr)
        {
            return Err(limited(l, None, ip));
        }
        Ok(Source { ip, received_at_ms })
    }

    /// Step 2: the body, at most `cap` bytes (413 past it).
    async fn body(&self, request: Request, cap: usize, source: &Source) -> Result<Bytes, Refusal> {
        match axum::body::to_bytes(request.into_body(), cap).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if too_large(&e) => {
                let detail = format!("body exceeds {cap} bytes");
                let refusal = Refusal::new(413, "payload_too_large", detail, None);
                Err(self.refused(refusal, source, None).await)
            }
            // The listener's body deadline passed (or the client went away mid-body).
            Err(e) => {
                let refusal = Refusal::new(408, "body_timeout", e.to_string(), None);
                Err(self.refused(refusal, source, None).await)
            }
        }
    }

    /// Step 7: the server's bucket.
    fn server_bucket(&self, server_id: &str, source: &Source) -> Result<(), Step> {
        let config = self.config.current();
        self.limits
            .check_server(&config.rate_limit, server_id)
            .map_err(|l| Step::Limited(limited(l, Some(server_id), source.ip)))
    }

    /// Step 6: one signature on the verifier thread. A failure is an audit event.
    async fn verify(
        &self,
        key: &PublicKey,
        message: Vec<u8>,
        signature: ed25519_dalek::Signature,
        server_id: &str,
        source: &Source,
    ) -> bool {
        let ok = self.verifier.verify(key, message, signature).await.is_ok();
        if !ok {
            tracing::warn!(
                target: "vigil::audit",
                server_id = %server_id,
                source_ip = ?source.ip,
                "signature verification failed"
            );
        }
        ok
    }

    /// Logs a refusal and appends it; returns it for the answer. What the request claimed is
    /// attacker text: the record keeps at most [`MAX_CLAIM_CHARS`] of the server id and
    /// [`MAX_DETAIL_CHARS`] of the detail, and the log line escapes both (`?`), so a 64 KiB id
    /// or a member name with a newline neither fills the audit table nor forges a log line.
    async fn refused(&self, refusal: Refusal, source: &Source, body: Option<&[u8]>) -> Refusal {
        let source_ip = source.text();
        let claimed = refusal
            .claimed_server_id
            .as_deref()
            .map(|id| truncated(id, MAX_CLAIM_CHARS));
        let detail = truncated(&refusal.detail, MAX_DETAIL_CHARS);
        tracing::info!(
            code = refusal.code,
            status = refusal.status,
            server_id = ?claimed.as_deref().unwrap_or("-"),
            source_ip = source_ip.as_deref().unwrap_or("-"),
            detail = ?detail,
            "heartbeat rejected"
        );
        self.servers
            .record_rejection(RejectionNotice {
                received_at_ms: source.received_at_ms,
                code: refusal.code,
                http_status: refusal.status,
                detail,
                claimed_server_id: claimed,
                source_ip,
                body_sha256: body.map(crate::crypto::digest_of),
            })
            .await;
        refusal
    }
}

/// Most characters of a claimed server id a rejection record keeps (a valid id has 128 at most).
pub const MAX_CLAIM_CHARS: usize = 128;

/// Most characters of a refusal's detail a rejection record keeps.
pub const MAX_DETAIL_CHARS: usize = 512;

/// `text` cut to `max` characters, with `…` when it was longer.
fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Why a step stopped a request: a bucket (answered, never recorded) or a refusal (recorded).
enum Step {
    Limited(Refusal),
    Refused(Refusal),
}

impl From<Refusal> for Step {
    fn from(refusal: Refusal) -> Self {
        Step::Refused(refusal)
    }
}

fn refusal(decoded: &DecodedHeartbeat, status: u16, code: &'static str, detail: String) -> Refusal {
    Refusal::new(status, code, detail, Some(&decoded.server_id))
}

/// 429 with `Retry-After`; logged at debug and never stored (a flood must not become writes).
/// Whether reading a body stopped at its length cap (anywhere in the error's source chain).
fn too_large(error: &axum::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

fn limited(limited: Limited, server_id: Option<&str>, ip: Option<IpAddr>) -> Refusal {
    tracing::debug!(?limited, server_id = server_id.unwrap_or("-"), source_ip = ?ip, "rate limited");
    let which = match limited {
        Limited::Ip { .. } => "this client address",
        Limited::Server { .. } => "this server",
    };
    Refusal {
        retry_after: Some(limited.retry_after()),
        ..Refusal::new(
            429,
            "rate_limited",
            format!("too many requests from {which}; retry later"),
            None,
        )
    }
}

/// Step 8, the one clock-skew rule: the agent's timestamp within `max_clock_skew` of the host's
/// receive time.
pub fn within_skew(
    sent_at_ms: i64,
    received_at_ms: i64,
    rules: TrustRules,
    server_id: &str,
) -> Result<(), Refusal> {
    let skew = (sent_at_ms - received_at_ms).abs();
    if skew > rules.max_clock_skew_ms {
        let detail = format!(
            "timestamp is {} s from the host clock; at most {} s is accepted",
            skew / 1000,
            rules.max_clock_skew_ms / 1000
        );
        return Err(Refusal::new(409, "clock_skew", detail, Some(server_id)));
    }
    Ok(())
}

/// A fixed set of servers for checking bodies without an engine (the conformance-vector and
/// fuzz suites): every identity is known up front, nothing registers, and refusals are kept in
/// memory to be read back.
#[derive(Debug, Default)]
pub struct FixedServers {
    identities: std::collections::HashMap<String, Arc<Identity>>,
    /// A std mutex: held only to push or copy, never across an await.
    rejections: std::sync::Mutex<Vec<RejectionNotice>>,
}

impl FixedServers {
    /// These servers and no others.
    pub fn new(identities: impl IntoIterator<Item = Identity>) -> Self {
        Self {
            identities: identities
                .into_iter()
                .map(|identity| (identity.server_id.clone(), Arc::new(identity)))
                .collect(),
            rejections: Default::default(),
        }
    }

    /// The refusals recorded so far, oldest first.
    pub fn rejections(&self) -> Vec<RejectionNotice> {
        self.rejections
            .lock()
            .map(|list| list.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Servers for FixedServers {
    async fn identity(&self, server_id: &str) -> Option<Arc<Identity>> {
        self.identities.get(server_id).cloned()
    }

    async fn register(&self, _server: NewServer) -> Result<bool, Refusal> {
        Ok(false)
    }

    async fn record_rejection(&self, notice: RejectionNotice) {
        if let Ok(mut list) = self.rejections.lock() {
            list.push(notice);
        }
    }

    async fn token_owner(
        &self,
        _kind: TokenKind,
        _token_sha256: &str,
    ) -> Result<Option<String>, Refusal> {
        Ok(None)
    }

    async fn ingest_key(&self, _presented: &str) -> Result<Option<String>, Refusal> {
        Ok(None)
    }
}

/// The v1 heartbeat a compat request's `members` make for `identity`'s server: `server_id`,
/// the server's `key_version` and the receive time as `timestamp` added, through the v1 decode
/// like any heartbeat (so replay reads it back), unsigned, with the body as sent kept.
fn v1_of(
    mut body: serde_json::Map<String, serde_json::Value>,
    identity: &Identity,
    bytes: &[u8],
    source: &Source,
    auth: AuthKind,
) -> Result<VerifiedHeartbeat, Refusal> {
    let server_id = identity.server_id.clone();
    body.insert("server_id".into(), server_id.clone().into());
    body.insert("key_version".into(), identity.key_version.into());
    body.insert(
        "timestamp".into(),
        crate::clock::format_rfc3339_ms(source.received_at_ms).into(),
    );
    let body_text = serde_json::Value::Object(body).to_string();
    let decoded = decode(body_text.as_bytes()).map_err(|e| {
        let mut refusal = Refusal::from(e);
        refusal.status = 400;
        refusal.claimed_server_id = Some(server_id);
        refusal
    })?;
    Ok(VerifiedHeartbeat {
        body_text,
        decoded,
        received_at_ms: source.received_at_ms,
        signed: false,
        auth,
        original_body: Some(String::from_utf8_lossy(bytes).into_owned()),
        source_ip: source.text(),
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use serde_json::Map;

    use super::*;
    use crate::config::Config;
    use crate::ingest::rotation::sign;
    use crate::ingest::signature::public_key_of;

    fn gate(identity: Identity) -> Gate {
        let mut config = Config::default();
        config.rate_limit.per_server_per_minute = 0;
        let servers = Arc::new(FixedServers::new([identity]));
        let verifier = Verifier::start(64).expect("verifier thread starts");
        Gate::new(ConfigHandle::new(config), verifier, servers)
    }

    async fn admit(gate: &Gate, body: &[u8], at: i64) -> Result<KeyRotation, Refusal> {
        let request = axum::http::Request::post("/v1/agent/rotate-key")
            .body(axum::body::Body::from(body.to_vec()))
            .expect("request");
        gate.admit_rotation_at(request, at).await
    }

    fn request(key: &SigningKey, next: &SigningKey, version: u32) -> Vec<u8> {
        let mut body = Map::new();
        body.insert("server_id".into(), "eu-1".into());
        body.insert("key_version".into(), version.into());
        body.insert("timestamp".into(), "2026-01-22T21:05:00Z".into());
        body.insert(
            "next_public_key".into(),
            public_key_of(next).to_base64().into(),
        );
        let signature = sign(key, &body).expect("signs");
        body.insert("signature".into(), signature.into());
        serde_json::to_vec(&body).expect("serialises")
    }

    #[tokio::test]
    async fn rotation_verifies_only_with_the_current_key_and_version() {
        let current = SigningKey::from_bytes(&[1; 32]);
        let next = SigningKey::from_bytes(&[2; 32]);
        let identity = Identity {
            server_id: "eu-1".into(),
            public_key: public_key_of(&current),
            key_version: 3,
            is_verified: true,
        };
        let at = 1_769_115_900_000;
        let gate = gate(identity);
        let ok = request(&current, &next, 3);
        let rotation = admit(&gate, &ok, at).await.expect("admitted");
        assert_eq!(rotation.expected_version, 3);
        assert_eq!(rotation.public_key, public_key_of(&next).to_base64());
        let code = |bytes: Vec<u8>, at: i64| {
            let gate = gate.clone();
            async move { admit(&gate, &bytes, at).await.unwrap_err().code }
        };
        assert_eq!(
            code(request(&current, &next, 2), at).await,
            "key_version_mismatch"
        );
        assert_eq!(code(request(&next, &next, 3), at).await, "bad_signature");
        assert_eq!(
            code(request(&current, &current, 3), at).await,
            "invalid_field"
        );
        assert_eq!(code(ok.clone(), at + 3_600_000).await, "clock_skew");
        // A heartbeat-prefixed signature over the same body is not a rotation signature.
        let mut body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&ok).expect("object");
        body.remove("signature");
        let hb_sig = crate::ingest::signature::sign_body(&current, &body).expect("signs");
        body.insert("signature".into(), hb_sig.into());
        let crossed = serde_json::to_vec(&body).expect("serialises");
        assert_eq!(code(crossed, at).await, "bad_signature");
    }
}
