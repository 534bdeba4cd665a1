//! Host-side state of one VM: what the host functions read and change.
//!
//! [`HostState`] is the data of a `Store`; nothing lives in statics. Data
//! that Envoy shares between VMs of the same `vm_id` (shared data, shared
//! queues) lives in a [`SharedRegistry`] handed to every VM built from the
//! same [`crate::plugin::Plugin`].

use crate::abi::GuestHandles;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tollgate_traffic::Callout;

pub use tollgate_abi::LogLevel;

/// One line the guest logged (`proxy_log`, or stdout/stderr through WASI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The level the guest (or the host, for call traces) logged at.
    pub level: LogLevel,
    /// The message.
    pub message: String,
}

/// A canned answer for `proxy_http_call` (the harness has no upstream clusters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallStub {
    /// Response headers including `:status`.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// A canned answer for unary `proxy_grpc_call`s to one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCallStub {
    /// The cluster (the `service` argument as a plain name); empty matches any.
    pub cluster: String,
    /// gRPC status: `0` answers `proxy_on_grpc_receive` with `message`,
    /// anything else `proxy_on_grpc_close` with this status.
    pub status: u32,
    /// The response message (serialized protobuf) for status 0.
    pub message: Vec<u8>,
    /// The status message for a failure (`proxy_get_status`).
    pub status_message: String,
}

/// How a VM is set up: identity, configuration, injected clock and randomness.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// `plugin_name` property (Envoy's `name` of the plugin).
    pub plugin_name: String,
    /// Root id (`root_id` in Envoy's plugin config); `plugin_root_id` property.
    pub root_id: String,
    /// VM id; shared data and queues are shared between VMs with the same id.
    pub vm_id: String,
    /// VM configuration bytes (`vm_config.configuration`).
    pub vm_config: Vec<u8>,
    /// Plugin configuration bytes (`configuration`).
    pub plugin_config: Vec<u8>,
    /// Messages below this level are dropped; `proxy_get_log_level` returns it.
    pub log_level: LogLevel,
    /// Environment variables visible through WASI `environ_get`.
    pub env: Vec<(String, String)>,
    /// `source.address` (`ip:port`) of the simulated client.
    pub source_address: String,
    /// `destination.address` (`ip:port`) of the simulated listener.
    pub destination_address: String,
    /// Answer for `proxy_http_call`; `None` makes calls fail like an unknown cluster.
    pub http_call_stub: Option<HttpCallStub>,
    /// Answers for `proxy_grpc_call`, by cluster; a call no stub matches
    /// fails like an unknown cluster (`BadArgument`).
    pub grpc_call_stubs: Vec<GrpcCallStub>,
    /// Per-cluster answers for `proxy_http_call` (before `http_call_stub`).
    pub http_clusters: Vec<crate::callouts::HttpClusterStub>,
    /// Per-cluster answers for gRPC calls and streams (before `grpc_call_stubs`).
    pub grpc_clusters: Vec<crate::callouts::GrpcClusterStub>,
    /// Property values by path (segments joined by `.`, e.g. `source.address`),
    /// as Envoy encodes them; they take precedence over the built-in ones.
    pub properties: Vec<(String, Vec<u8>)>,
    /// Seed for WASI `random_get`.
    pub seed: u64,
    /// Wall-clock time at VM start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// Longest a single call into the guest may run before it is stopped.
    pub call_timeout: Duration,
    /// Memory, callouts, wall time and log per exchange (see [`crate::limits`]).
    pub limits: crate::limits::Limits,
    /// When callout answers without a delay of their own arrive.
    pub answer_timing: crate::callouts::AnswerTiming,
}

impl Default for VmSettings {
    fn default() -> Self {
        Self {
            plugin_name: "tollgate".into(),
            root_id: String::new(),
            vm_id: String::new(),
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            log_level: LogLevel::Info,
            env: Vec::new(),
            source_address: "127.0.0.1:40000".into(),
            destination_address: "127.0.0.1:10000".into(),
            http_call_stub: None,
            grpc_call_stubs: Vec::new(),
            http_clusters: Vec::new(),
            grpc_clusters: Vec::new(),
            properties: Vec::new(),
            seed: 0x70_11_6a_7e,
            // 2024-01-01T00:00:00Z
            start_unix_nanos: 1_704_067_200_000_000_000,
            call_timeout: Duration::from_secs(5),
            limits: crate::limits::Limits::default(),
            answer_timing: crate::callouts::AnswerTiming::AfterInput,
        }
    }
}

/// The shared box a [`HeaderMap`]'s entries live in.
pub(crate) type MapBox = Arc<Vec<(String, String)>>;

/// An HTTP header map, names lower-cased, order and duplicates kept.
///
/// The entries are shared copy-on-write: cloning a map is a reference-count
/// bump and the first edit of a shared map copies it, so the stream driver
/// can hand maps to every filter of a chain and take them back without
/// copying when the filter did not touch them ([`HeaderMap::same`]).
/// An empty map holds no allocation (`None`).
#[derive(Debug, Clone, Default)]
pub struct HeaderMap {
    entries: Option<Arc<Vec<(String, String)>>>,
}

impl PartialEq for HeaderMap {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for HeaderMap {}

impl HeaderMap {
    /// A map from pairs (names are lower-cased).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let entries: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.into()))
            .collect();
        Self {
            entries: (!entries.is_empty()).then(|| Arc::new(entries)),
        }
    }

    /// A map of entries whose names are already lower-case (as a
    /// recording's are): taken as they are, no copy.
    pub(crate) fn from_lowercase_entries(entries: Vec<(String, String)>) -> Self {
        debug_assert!(
            entries
                .iter()
                .all(|(k, _)| !k.bytes().any(|b| b.is_ascii_uppercase()))
        );
        Self {
            entries: (!entries.is_empty()).then(|| Arc::new(entries)),
        }
    }

    /// [`Self::from_lowercase_entries`] in `boxed`, a box an earlier map
    /// left ([`Self::into_entries_keeping`]), when one is given.
    pub(crate) fn from_lowercase_entries_in(
        entries: Vec<(String, String)>,
        boxed: Option<MapBox>,
    ) -> Self {
        match boxed {
            Some(mut b) if !entries.is_empty() => match Arc::get_mut(&mut b) {
                Some(slot) => {
                    debug_assert!(
                        entries
                            .iter()
                            .all(|(k, _)| !k.bytes().any(|b| b.is_ascii_uppercase()))
                    );
                    *slot = entries;
                    Self { entries: Some(b) }
                }
                None => Self::from_lowercase_entries(entries),
            },
            _ => Self::from_lowercase_entries(entries),
        }
    }

    /// [`Self::into_entries`], the emptied box kept in `boxes` (at most
    /// four) for [`Self::from_lowercase_entries_in`].
    pub(crate) fn into_entries_keeping(
        self,
        boxes: Option<&mut Vec<MapBox>>,
    ) -> Result<Vec<(String, String)>, HeaderMap> {
        let Some(boxes) = boxes else {
            return self.into_entries();
        };
        match self.entries {
            None => Ok(Vec::new()),
            Some(mut a) => match Arc::get_mut(&mut a) {
                Some(v) => {
                    let v = std::mem::take(v);
                    if boxes.len() < 4 {
                        boxes.push(a);
                    }
                    Ok(v)
                }
                None => Err(HeaderMap { entries: Some(a) }),
            },
        }
    }

    /// The entries, taken when no other clone of the map holds them.
    pub(crate) fn into_entries(self) -> Result<Vec<(String, String)>, HeaderMap> {
        match self.entries {
            None => Ok(Vec::new()),
            Some(a) => Arc::try_unwrap(a).map_err(|a| HeaderMap { entries: Some(a) }),
        }
    }

    /// Entries in order.
    #[inline]
    pub fn entries(&self) -> &[(String, String)] {
        self.entries.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The entries, to edit (copied first when shared).
    fn entries_mut(&mut self) -> &mut Vec<(String, String)> {
        Arc::make_mut(self.entries.get_or_insert_with(Arc::default))
    }

    /// Whether `other` is this very map, unedited since one was cloned from
    /// the other (a cheap check; equal maps built apart are not the same,
    /// two empty maps are).
    #[inline]
    pub fn same(&self, other: &HeaderMap) -> bool {
        match (&self.entries, &other.entries) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// No entries.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// First value of `name` (Envoy returns the first of several).
    #[inline]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Appends a value.
    pub fn add(&mut self, name: &str, value: &str) {
        self.entries_mut()
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Replaces all values of `name` with one (added when absent).
    pub fn replace(&mut self, name: &str, value: &str) {
        let lower = name.to_ascii_lowercase();
        let entries = self.entries_mut();
        match entries.iter().position(|(k, _)| *k == lower) {
            Some(i) => {
                entries[i].1 = value.to_string();
                let mut j = 0;
                entries.retain(|(k, _)| {
                    j += 1;
                    j - 1 <= i || *k != lower
                });
            }
            None => entries.push((lower, value.to_string())),
        }
    }

    /// Removes all values of `name`.
    pub fn remove(&mut self, name: &str) {
        let lower = name.to_ascii_lowercase();
        if self.entries().iter().any(|(k, _)| *k == lower) {
            self.entries_mut().retain(|(k, _)| *k != lower);
        }
    }

    /// Replaces the whole map.
    pub fn set_all(&mut self, pairs: Vec<(String, String)>) {
        let entries: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        self.entries = (!entries.is_empty()).then(|| Arc::new(entries));
    }
}

/// A response the filter sent with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// Status code.
    pub status: u32,
    /// Response code details (Envoy's `response_code_details`).
    pub details: String,
    /// Body.
    pub body: Vec<u8>,
    /// Additional headers.
    pub headers: Vec<(String, String)>,
    /// gRPC status, `-1` for none.
    pub grpc_status: i32,
}

/// Which callback of the HTTP stream is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Request headers.
    RequestHeaders,
    /// Request body.
    RequestBody,
    /// Response headers.
    ResponseHeaders,
    /// Response body.
    ResponseBody,
    /// `on_done` / `on_log` / `on_delete`.
    Finished,
}

/// The HTTP stream currently driven through a VM.
#[derive(Debug, Clone)]
pub struct StreamState {
    /// The stream's context id.
    pub id: u32,
    /// Current callback.
    pub phase: Phase,
    /// Request headers, pseudo-headers first.
    pub request_headers: HeaderMap,
    /// Request trailers (the harness delivers none; the map is empty).
    pub request_trailers: HeaderMap,
    /// Request body once the body phase started.
    pub request_body: Option<Vec<u8>>,
    /// Response headers once the response phase started.
    pub response_headers: Option<HeaderMap>,
    /// Response trailers (empty).
    pub response_trailers: HeaderMap,
    /// Response body once its phase started.
    pub response_body: Option<Vec<u8>>,
    /// A local response the filter sent.
    pub local_response: Option<LocalResponse>,
    /// The host acted on [`Self::local_response`] (the callback that sent
    /// it returned): another `proxy_send_local_response` replaces it, as
    /// Envoy's filter manager sends a local reply made while one is
    /// encoded. Within one callback the first call wins.
    pub local_response_taken: bool,
    /// `proxy_continue_stream(request)` was called.
    pub continued_request: bool,
    /// `proxy_continue_stream(response)` was called.
    pub continued_response: bool,
    /// `proxy_close_stream` was called for the request or response.
    pub closed: bool,
    /// Virtual time at which the request arrived (ns since the Unix epoch).
    pub start_unix_nanos: u64,
    /// The request's body size as received.
    pub request_size: u64,
    /// The request headers are still the filter's to edit: Envoy lets go of
    /// them once `proxy_on_request_headers` returned Continue (from then on
    /// they are neither readable nor writable until the access log, where
    /// they are read-only); a filter that paused keeps them.
    pub request_headers_open: bool,
    /// The same for the response headers and `proxy_on_response_headers`.
    pub response_headers_open: bool,
    /// The current body callback carries the end of the stream (Envoy
    /// creates the trailers a filter writes then).
    pub end_of_stream: bool,
    /// The guest wrote a body (`proxy_set_buffer_bytes`) since the driver
    /// last handed one over: only then is the body compared with what the
    /// callback was given.
    pub body_written: bool,
    /// The exchange's own properties (a recording's `properties:`), dotted
    /// paths; they win over the VM's and the built-in ones. Shared by the
    /// filters of a chain.
    pub properties: Arc<[(String, Vec<u8>)]>,
}

impl StreamState {
    /// A stream whose request headers have just arrived (nothing else yet).
    pub fn at_request_headers(
        id: u32,
        request_headers: HeaderMap,
        start_unix_nanos: u64,
        request_size: u64,
    ) -> Self {
        Self {
            id,
            phase: Phase::RequestHeaders,
            request_headers,
            request_trailers: HeaderMap::default(),
            request_body: None,
            response_headers: None,
            response_trailers: HeaderMap::default(),
            response_body: None,
            local_response: None,
            local_response_taken: false,
            continued_request: false,
            continued_response: false,
            closed: false,
            start_unix_nanos,
            request_size,
            request_headers_open: true,
            response_headers_open: true,
            end_of_stream: false,
            body_written: false,
            properties: Arc::default(),
        }
    }
}

/// Response data visible during `proxy_on_http_call_response`.
#[derive(Debug, Clone)]
pub(crate) struct HttpCallResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// The recorded answers for the http callouts of the exchange being
/// replayed, shared by the filters of a chain and taken in order. None
/// (the default, the usual case) holds no allocation.
#[derive(Debug, Clone, Default)]
pub struct ExchangeCallouts(Option<Arc<Mutex<VecDeque<Callout>>>>);

impl ExchangeCallouts {
    /// A queue of answers, in the order the calls are expected.
    pub fn new(callouts: impl IntoIterator<Item = Callout>) -> Self {
        Self(Some(Arc::new(Mutex::new(callouts.into_iter().collect()))))
    }

    fn matching(cluster: &str) -> impl Fn(&Callout) -> bool + '_ {
        move |c| c.cluster.is_empty() || c.cluster == cluster
    }

    /// Whether an answer for a call to `cluster` is left.
    pub(crate) fn has(&self, cluster: &str) -> bool {
        self.0.as_ref().is_some_and(|q| {
            q.lock()
                .is_ok_and(|q| q.iter().any(Self::matching(cluster)))
        })
    }

    /// Takes the first answer left for a call to `cluster`, as a stub
    /// (`:status` first, then the recorded headers).
    pub(crate) fn take(&self, cluster: &str) -> Option<HttpCallStub> {
        let mut q = self.0.as_ref()?.lock().ok()?;
        let at = q.iter().position(Self::matching(cluster))?;
        let c = q.remove(at)?;
        let mut headers = vec![(":status".to_owned(), c.response.status.to_string())];
        headers.extend(c.response.headers);
        Some(HttpCallStub {
            headers,
            body: c.response.body,
        })
    }

    /// Answers not used (yet).
    pub fn remaining(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |q| q.lock().map_or(0, |q| q.len()))
    }
}

/// A virtual clock: fixed start, advanced explicitly by the driver.
#[derive(Debug, Clone, Copy)]
pub struct VirtualClock {
    /// Realtime, ns since the Unix epoch.
    pub realtime: u64,
    /// Monotonic time, ns.
    pub monotonic: u64,
}

impl VirtualClock {
    /// Moves both clocks forward.
    pub fn advance(&mut self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.realtime = self.realtime.saturating_add(n);
        self.monotonic = self.monotonic.saturating_add(n);
    }
}

/// A small seeded PRNG (SplitMix64) for WASI `random_get`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub use tollgate_abi::MetricKind;

/// A metric defined by the guest.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: MetricKind,
    /// Counter / gauge value (last recorded value for histograms).
    pub value: i64,
    /// Every value recorded into a histogram.
    pub samples: Vec<u64>,
}

/// Metrics of one VM, ids as Envoy makes them: `(index << 2) | kind`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub(crate) list: Vec<Metric>,
    pub(crate) by_name: HashMap<(String, u32), u32>,
}

impl Metrics {
    /// The metric for an id.
    pub fn get(&self, id: u32) -> Option<&Metric> {
        let m = self.list.get((id >> 2) as usize)?;
        (m.kind as u32 == id & 3).then_some(m)
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let m = self.list.get_mut((id >> 2) as usize)?;
        (m.kind as u32 == id & 3).then_some(m)
    }

    /// A metric by name.
    pub fn by_name(&self, name: &str) -> Option<&Metric> {
        self.list.iter().find(|m| m.name == name)
    }

    /// All metrics in definition order.
    pub fn all(&self) -> &[Metric] {
        &self.list
    }
}

/// A shared queue.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub vm_id: String,
    pub name: String,
    pub items: VecDeque<Vec<u8>>,
}

/// State shared by every VM created from one plugin: Envoy's process-wide
/// shared data and shared queues, keyed by vm_id.
#[derive(Debug, Default)]
pub struct SharedRegistry {
    pub(crate) data: Mutex<SharedData>,
    pub(crate) queues: Mutex<Vec<Queue>>,
}

/// One vm_id's shared data: `key -> (value, cas)`.
pub(crate) type SharedMap = HashMap<Vec<u8>, (Vec<u8>, u32)>;

/// Shared data: `vm_id -> key -> (value, cas)`.
#[derive(Debug, Default)]
pub(crate) struct SharedData {
    pub map: HashMap<String, SharedMap>,
    pub next_cas: u32,
}

impl SharedRegistry {
    pub(crate) fn data(&self) -> std::sync::MutexGuard<'_, SharedData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
    pub(crate) fn queues(&self) -> std::sync::MutexGuard<'_, Vec<Queue>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything a VM's host functions work on (the data of its `Store`).
pub struct HostState {
    /// Shared so a host function can hold the allocator while calling it
    /// (a reference-count bump, not a clone of the typed function).
    pub(crate) guest: Option<Arc<GuestHandles>>,
    pub(crate) settings: Arc<VmSettings>,
    pub(crate) shared: Arc<SharedRegistry>,
    pub(crate) clock: VirtualClock,
    pub(crate) rng: Rng,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) root_context_id: u32,
    pub(crate) current_context: u32,
    pub(crate) effective_context: u32,
    /// Guest calls started so far (the call timeout counts epoch ticks per call).
    pub(crate) calls_started: u64,
    pub(crate) live_contexts: ContextSet,
    pub(crate) in_configure: bool,
    pub(crate) stream: Option<StreamState>,
    pub(crate) http_call_response: Option<HttpCallResponse>,
    pub(crate) pending_queue_ready: Vec<(u32, u32)>,
    pub(crate) tick_period_ms: u32,
    pub(crate) metrics: Metrics,
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    pub(crate) warned: HashSet<&'static str>,
    pub(crate) done_called: bool,
    pub(crate) proc_exit: Option<u32>,
    pub(crate) abi: crate::plugin::AbiVersion,
    pub(crate) registered_queues: Vec<u32>,
    /// Callouts in flight: tokens, open gRPC calls and streams, answers
    /// waiting for their (virtual) time.
    pub(crate) outstanding: crate::callouts::Outstanding,
    /// The `proxy_on_http_call_response` running is a reset's (no response maps).
    pub(crate) http_call_reset: bool,
    /// Metadata visible as `GrpcReceiveInitialMetadata` during its callback.
    pub(crate) grpc_initial_metadata: Option<HeaderMap>,
    /// Metadata visible as `GrpcReceiveTrailingMetadata` during its callback.
    pub(crate) grpc_trailing_metadata: Option<HeaderMap>,
    /// The message visible as `GrpcReceiveBuffer` during `proxy_on_grpc_receive`.
    pub(crate) grpc_receive: Option<Vec<u8>>,
    /// What `proxy_get_status` answers: the last gRPC status and message.
    pub(crate) grpc_status: (u32, String),
    /// Callouts the guest made (`http <cluster> <method> <path>`,
    /// `grpc <cluster> <service>/<method>`), refused ones included.
    pub(crate) callouts: Vec<String>,
    /// Recorded answers for the current exchange's http callouts.
    pub(crate) exchange_callouts: ExchangeCallouts,
    /// Calls answered so far per cluster (and gRPC method): the index into
    /// a sequence of answers for the same cluster (the last one repeats).
    pub(crate) answered_calls: HashMap<String, usize>,
    /// What crossed the guest/host boundary (for `tollgate bench`).
    pub(crate) boundary: BoundaryCounters,
    /// What the plugin's wrapping linker does in this store (count and/or
    /// trace guest->host calls; see [`crate::abi::wrapped_linker`]).
    pub(crate) wrap: crate::abi::Wrap,
    /// This store's host functions behind the wrappers, by import index
    /// (looked up once per store, on first call).
    pub(crate) wrapped_funcs: Vec<Option<wasmtime::Func>>,
    /// The store's memory limiter (Envoy's 1 GiB by default).
    pub(crate) memory_limiter: crate::limits::MemoryLimiter,
    /// What the current exchange has spent (callouts, wall time).
    pub(crate) exchange_budget: crate::limits::ExchangeBudget,
    /// The guest log's bookkeeping since the last take.
    pub(crate) log_budget: crate::limits::LogBudget,
}

/// The context ids alive in a VM: a handful at a time (the root and the
/// streams in flight), so a small vector beats hashing on every stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct ContextSet(Vec<u32>);

impl ContextSet {
    /// Adds `id`; `false` when it was already there.
    #[inline]
    pub(crate) fn insert(&mut self, id: u32) -> bool {
        if self.0.contains(&id) {
            return false;
        }
        self.0.push(id);
        true
    }

    /// Removes `id`; `false` when it was not there.
    #[inline]
    pub(crate) fn remove(&mut self, id: &u32) -> bool {
        match self.0.iter().rposition(|c| c == id) {
            Some(i) => {
                self.0.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether `id` is alive.
    pub(crate) fn contains(&self, id: &u32) -> bool {
        self.0.contains(id)
    }
}

/// Traffic across the guest/host boundary of one VM since it started.
/// Cells, so that read-only memory accessors can count too.
#[derive(Debug, Default)]
pub(crate) struct BoundaryCounters {
    pub host_calls: std::cell::Cell<u64>,
    pub bytes_in: std::cell::Cell<u64>,
    pub bytes_out: std::cell::Cell<u64>,
}

/// A snapshot of a VM's guest/host boundary traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Boundary {
    /// Host functions the guest called (counted only by VMs started from a
    /// [`crate::plugin::Plugin::from_bytes_metered`] plugin; zero otherwise).
    pub host_calls: u64,
    /// Bytes the host read out of guest memory.
    pub bytes_in: u64,
    /// Bytes the host wrote into guest memory.
    pub bytes_out: u64,
}

impl BoundaryCounters {
    pub(crate) fn read(&self, n: usize) {
        self.bytes_in.set(self.bytes_in.get() + n as u64);
    }

    pub(crate) fn wrote(&self, n: usize) {
        self.bytes_out.set(self.bytes_out.get() + n as u64);
    }

    pub(crate) fn snapshot(&self) -> Boundary {
        Boundary {
            host_calls: self.host_calls.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
        }
    }
}

impl HostState {
    /// Guest/host boundary traffic since the VM started.
    pub fn boundary(&self) -> Boundary {
        self.boundary.snapshot()
    }

    /// Fresh state for a new VM.
    pub(crate) fn new(
        settings: Arc<VmSettings>,
        shared: Arc<SharedRegistry>,
        abi: crate::plugin::AbiVersion,
    ) -> Self {
        Self {
            abi,
            registered_queues: Vec::new(),
            outstanding: crate::callouts::Outstanding::default(),
            http_call_reset: false,
            grpc_initial_metadata: None,
            grpc_trailing_metadata: None,
            grpc_receive: None,
            grpc_status: (0, String::new()),
            callouts: Vec::new(),
            exchange_callouts: ExchangeCallouts::default(),
            answered_calls: HashMap::new(),
            boundary: BoundaryCounters::default(),
            wrap: crate::abi::Wrap::default(),
            wrapped_funcs: Vec::new(),
            memory_limiter: crate::limits::MemoryLimiter::new(settings.limits.memory_bytes),
            exchange_budget: crate::limits::ExchangeBudget::default(),
            log_budget: crate::limits::LogBudget::default(),
            guest: None,
            clock: VirtualClock {
                realtime: settings.start_unix_nanos,
                monotonic: 1_000_000_000,
            },
            rng: Rng::new(settings.seed),
            settings,
            shared,
            logs: Vec::new(),
            root_context_id: 0,
            current_context: 0,
            effective_context: 0,
            calls_started: 0,
            live_contexts: ContextSet::default(),
            in_configure: false,
            stream: None,
            http_call_response: None,
            pending_queue_ready: Vec::new(),
            tick_period_ms: 0,
            metrics: Metrics::default(),
            properties: HashMap::new(),
            warned: HashSet::new(),
            done_called: false,
            proc_exit: None,
        }
    }

    /// The context a host call acts on: the effective context when one was
    /// set with `proxy_set_effective_context`, else the one being called.
    #[inline]
    pub(crate) fn context(&self) -> u32 {
        if self.effective_context != 0 {
            self.effective_context
        } else {
            self.current_context
        }
    }

    /// The HTTP stream, when the acting context is that stream.
    #[inline]
    pub(crate) fn stream_mut(&mut self) -> Option<&mut StreamState> {
        let id = self.context();
        self.stream.as_mut().filter(|s| s.id == id)
    }

    /// The HTTP stream, when the acting context is that stream.
    #[inline]
    pub(crate) fn stream(&self) -> Option<&StreamState> {
        let id = self.context();
        self.stream.as_ref().filter(|s| s.id == id)
    }

    /// Records a guest log line when at or above the configured level.
    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        if level >= self.settings.log_level {
            self.log_bytes(level, message.as_bytes());
        }
    }

    /// Records a guest log line from its bytes when at or above the
    /// configured level: cut at the line limit, dropped past the bytes kept
    /// per exchange (both said in a `[harness]` line when the log is taken).
    pub(crate) fn log_bytes(&mut self, level: LogLevel, message: &[u8]) {
        if level < self.settings.log_level {
            return;
        }
        let limits = self.settings.limits;
        let budget = &mut self.log_budget;
        let take = message.len().min(limits.log_line_bytes);
        if budget.kept.saturating_add(take) > limits.log_bytes_per_exchange {
            budget.dropped.0 += 1;
            budget.dropped.1 += message.len() as u64;
            return;
        }
        let (message, cut) = crate::limits::cut_line(message, limits.log_line_bytes);
        budget.kept += take;
        budget.cut += usize::from(cut);
        self.logs.push(LogLine { level, message });
    }

    /// The `[harness]` line saying what the log bounds dropped since the
    /// last take, if anything; resets the bookkeeping.
    fn log_budget_note(&mut self) -> Option<LogLine> {
        let b = std::mem::take(&mut self.log_budget);
        let (lines, bytes) = b.dropped;
        (lines > 0).then(|| LogLine {
            level: LogLevel::Warn,
            message: format!(
                "[harness] {lines} guest log line(s) ({bytes} bytes) dropped: past the {} of log kept per exchange",
                crate::limits::bytes(self.settings.limits.log_bytes_per_exchange as u64)
            ),
        })
    }

    /// Records a message from the harness itself (always kept).
    pub(crate) fn host_log(&mut self, level: LogLevel, message: String) {
        self.logs.push(LogLine {
            level,
            message: format!("[harness] {message}"),
        });
    }

    /// Callouts made so far (`http authz GET /check`, `grpc authz svc.Check/Check`), emptied.
    pub fn take_callouts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.callouts)
    }

    /// Logs collected so far, emptied.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        if let Some(note) = self.log_budget_note() {
            self.logs.push(note);
        }
        std::mem::take(&mut self.logs)
    }

    /// The guest's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The virtual clock.
    pub fn clock(&self) -> VirtualClock {
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_map_replace_keeps_first_position_and_drops_duplicates() {
        let mut m = HeaderMap::from_pairs([("A", "1"), ("b", "2"), ("a", "3")]);
        m.replace("a", "x");
        assert_eq!(
            m.entries(),
            &[("a".to_string(), "x".to_string()), ("b".into(), "2".into())]
        );
        m.replace("c", "y");
        assert_eq!(m.get("C"), Some("y"));
        m.remove("A");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a"), None);
    }

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
    }

    #[test]
    fn log_level_parses_and_orders() {
        assert_eq!("WARN".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert!("loud".parse::<LogLevel>().is_err());
        assert!(LogLevel::Critical > LogLevel::Info);
        assert_eq!(LogLevel::from_u32(6), None);
    }
}
