//! Call traces at the ABI level: parsing, normalising and comparing the
//! `[host->vm]` / `[vm->host]` lines Envoy prints with `-l trace` (or
//! `--component-log-level wasm:trace`) and the harness prints with
//! `--trace` (`tollgate_replay::ReplayBuilder::trace_calls`).
//!
//! Both print the same four line shapes (proxy-wasm-cpp-host's):
//!
//! ```text
//! [host->vm] proxy_on_request_headers(2, 9, 1)        a callback into the guest
//! [vm->host] env.proxy_get_header_map_pairs(0, 1048160, 1048164)   a host call
//! [host->vm] proxy_on_memory_allocate(266)            the host allocating in the guest
//! [host<-vm] proxy_on_memory_allocate return: 1087520
//! [vm<-host] env.proxy_get_header_map_pairs return: 0
//! [host<-vm] proxy_on_request_headers return: 0
//! ```
//!
//! [`parse`] turns lines (Envoy's log, with its `[time][thread][level][component]`
//! prefixes and other lines in between, or the harness's trace log lines)
//! into one call tree per VM ([`VmTrace`]). [`normalise`] turns a VM's tree into
//! comparable [`Step`]s grouped per context ([`Normalised`]): the root
//! context's calls and each stream's, in creation order, context ids and
//! http call tokens renamed by order of appearance, and only the arguments
//! that carry meaning kept. [`compare`] diffs two of them and names every
//! difference a [`Known`] rule explains. The rules of normalisation are
//! listed in `harness/docs/trace.md`; each is applied in [`Step::from_call`].

use std::collections::HashMap;
use std::fmt;

/// Which way a call crosses the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The host calls the guest: a callback (`[host->vm]`), or an allocation.
    HostToVm,
    /// The guest calls the host (`[vm->host]`).
    VmToHost,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Self::HostToVm => "host->vm",
            Self::VmToHost => "vm->host",
        }
    }
}

/// One call, with the calls made while it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Which way it went.
    pub direction: Direction,
    /// The function: `proxy_on_request_headers`, `env.proxy_log`,
    /// `wasi_snapshot_preview1.random_get`.
    pub function: String,
    /// The arguments as printed (integers).
    pub args: Vec<u64>,
    /// What it returned (`0`, `void`); `None` when no return line followed
    /// (the call trapped, or the log ended).
    pub result: Option<String>,
    /// Calls made while this one ran, in order.
    pub children: Vec<Call>,
}

/// The calls of one VM, in order (top level: host->guest calls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmTrace {
    /// Envoy's thread id for that VM; for the harness's lines, what precedes
    /// the marker (a chain's `[filter]` prefix), `None` when nothing does.
    pub thread: Option<String>,
    /// Top-level calls.
    pub calls: Vec<Call>,
}

impl VmTrace {
    /// Whether this VM served any HTTP stream (a context created with a parent).
    pub fn has_streams(&self) -> bool {
        self.calls.iter().any(|c| {
            c.function == "proxy_on_context_create" && c.args.get(1).is_some_and(|&p| p != 0)
        })
    }
}

/// A trace that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// A trace line whose shape is not one of the four.
    #[error("trace line {line}: cannot read {text:?} ({why})")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A return line that does not close the call open at that point.
    #[error("trace line {line}: `{function}` returns, but the open call is {open}")]
    Unbalanced {
        /// 1-based line number.
        line: usize,
        /// The function returning.
        function: String,
        /// The call open at that point (or `none`).
        open: String,
    },
}

/// One of the four markers, found anywhere in a line.
const MARKERS: [(&str, Direction, bool); 4] = [
    ("[host->vm] ", Direction::HostToVm, true),
    ("[host<-vm] ", Direction::HostToVm, false),
    ("[vm->host] ", Direction::VmToHost, true),
    ("[vm<-host] ", Direction::VmToHost, false),
];

/// Envoy's thread id: the second `[...]` group of `[time][thread][level][component] ...`.
fn envoy_thread(line: &str, marker_at: usize) -> Option<String> {
    let head = &line[..marker_at];
    let mut groups = head
        .split('[')
        .skip(1)
        .map(|g| g.split(']').next().unwrap_or(""));
    let _time = groups.next()?;
    let thread = groups.next()?;
    thread
        .chars()
        .all(|c| c.is_ascii_digit())
        .then(|| thread.to_string())
        .filter(|t| !t.is_empty())
}

/// Per-thread parser state.
#[derive(Default)]
struct Open {
    stack: Vec<Call>,
    vms: Vec<Vec<Call>>,
}

impl Open {
    fn finish_top(&mut self, call: Call) {
        let starts_vm = matches!(call.function.as_str(), "_initialize" | "_start");
        if starts_vm || self.vms.is_empty() {
            self.vms.push(Vec::new());
        }
        if let Some(vm) = self.vms.last_mut() {
            vm.push(call);
        }
    }
}

/// Reads the call trees out of `lines`: Envoy's whole log (other lines are
/// skipped; each thread is read apart, and each `_initialize`/`_start` at
/// the top level starts a new VM), or the harness's trace lines (a chain's
/// lines, prefixed `[filter]`, are read apart per filter). VMs come
/// out in the order they started per thread, threads in order of first line.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Vec<VmTrace>, TraceError> {
    let mut threads: Vec<(Option<String>, Open)> = Vec::new();
    for (n, line) in lines.into_iter().enumerate() {
        let Some((at, marker, direction, opens)) = MARKERS
            .iter()
            .filter_map(|&(m, d, o)| line.find(m).map(|at| (at, m, d, o)))
            .min_by_key(|&(at, ..)| at)
        else {
            continue;
        };
        // Envoy's thread id; else what precedes the marker (a chain's
        // `[filter]` prefix in the harness's logs), so VMs stay apart.
        let thread = envoy_thread(line, at).or_else(|| {
            let head = line[..at].trim();
            (!head.is_empty()).then(|| head.to_string())
        });
        let slot = match threads.iter().position(|(t, _)| *t == thread) {
            Some(i) => i,
            None => {
                threads.push((thread.clone(), Open::default()));
                threads.len() - 1
            }
        };
        let open = &mut threads[slot].1;
        let rest = line[at + marker.len()..].trim_end();
        let bad = |why| TraceError::BadLine {
            line: n + 1,
            text: line.to_string(),
            why,
        };
        if opens {
            let (function, args) = rest.split_once('(').ok_or_else(|| bad("no `(`"))?;
            let args = args
                .strip_suffix(')')
                .ok_or_else(|| bad("no closing `)`"))?;
            let args = if args.trim().is_empty() {
                Vec::new()
            } else {
                args.split(',')
                    .map(|a| a.trim().parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| bad("an argument is not an unsigned integer"))?
            };
            open.stack.push(Call {
                direction,
                function: function.to_string(),
                args,
                result: None,
                children: Vec::new(),
            });
        } else {
            let (function, result) = rest
                .split_once(" return: ")
                .ok_or_else(|| bad("no ` return: `"))?;
            let mut call = match open.stack.pop() {
                Some(c) if c.function == function && c.direction == direction => c,
                other => {
                    return Err(TraceError::Unbalanced {
                        line: n + 1,
                        function: function.to_string(),
                        open: other.map_or_else(|| "none".to_string(), |c| c.function),
                    });
                }
            };
            call.result = Some(result.to_string());
            match open.stack.last_mut() {
                Some(parent) => parent.children.push(call),
                None => open.finish_top(call),
            }
        }
    }
    let mut out = Vec::new();
    for (thread, mut open) in threads {
        // Calls left open (a trap, or the log ended): close them unanswered.
        while let Some(call) = open.stack.pop() {
            match open.stack.last_mut() {
                Some(parent) => parent.children.push(call),
                None => open.finish_top(call),
            }
        }
        out.extend(open.vms.into_iter().map(|calls| VmTrace {
            thread: thread.clone(),
            calls,
        }));
    }
    Ok(out)
}

/// One call after normalisation, ready to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 0: a callback; 1: a host call it made; 2: an allocation inside that.
    pub depth: usize,
    /// Which way it went.
    pub direction: Direction,
    /// The function.
    pub function: String,
    /// The arguments that carry meaning (context ids and tokens renamed).
    pub args: Vec<String>,
    /// The return value, when it carries meaning (`-` when dropped).
    pub result: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:indent$}{} {}({}) -> {}",
            "",
            self.direction.arrow(),
            self.function,
            self.args.join(", "),
            self.result,
            indent = self.depth * 2
        )
    }
}

/// Which arguments of a host call carry meaning; the rest are guest
/// pointers or lengths of data (see `harness/docs/trace.md`, rule
/// `pointers-and-data-lengths`). Unknown functions keep none.
fn value_args(function: &str) -> &'static [usize] {
    let name = function.rsplit('.').next().unwrap_or(function);
    match name {
        // (level, ptr, len)
        "proxy_log" => &[0],
        // (type, start, max, ptr, ptr) / (type, start, len, ptr, len)
        "proxy_get_buffer_bytes" | "proxy_set_buffer_bytes" => &[0, 1, 2],
        "proxy_get_buffer_status" => &[0],
        // (map, ptr, ptr) / (map, ptr, len) / (map, ptr)
        "proxy_get_header_map_pairs"
        | "proxy_set_header_map_pairs"
        | "proxy_get_header_map_size" => &[0],
        // (map, key ptr, key len, ...): the key's length tells keys apart.
        "proxy_get_header_map_value"
        | "proxy_add_header_map_value"
        | "proxy_replace_header_map_value"
        | "proxy_remove_header_map_value" => &[0, 2],
        // (path ptr, path len, ...)
        "proxy_get_property" | "proxy_set_property" => &[1],
        // (status, details ptr, details len, body ptr, body len, headers ptr, headers len, grpc)
        "proxy_send_local_response" => &[0, 2, 7],
        // (upstream ptr, upstream len, headers.., body.., trailers.., timeout, token ptr)
        "proxy_http_call" => &[1, 8],
        // (type, name ptr, name len, id ptr)
        "proxy_define_metric" => &[0, 2],
        // (id, value)
        "proxy_increment_metric" | "proxy_record_metric" => &[0, 1],
        "proxy_get_metric" => &[0],
        // (key ptr, key len, ...); set: (.., value ptr, value len, cas)
        "proxy_get_shared_data" | "proxy_set_shared_data" => &[1],
        "proxy_register_shared_queue" => &[1],
        "proxy_resolve_shared_queue" => &[1, 3],
        "proxy_enqueue_shared_queue" | "proxy_dequeue_shared_queue" => &[0],
        "proxy_set_tick_period_milliseconds" => &[0],
        "proxy_continue_stream" | "proxy_close_stream" => &[0],
        "proxy_set_effective_context" => &[0],
        "proxy_call_foreign_function" => &[1],
        // (fd, iovs, n, written ptr) / (clock, precision, ptr) / (ptr, len)
        "fd_write" => &[0],
        "clock_time_get" => &[0],
        "random_get" => &[1],
        _ => &[],
    }
}

/// Arguments that are ids the two hosts assign differently: renamed by
/// order of first appearance (rule `renamed-ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IdKind {
    Context,
    HttpToken,
    Metric,
    Queue,
}

impl IdKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Context => "s",
            Self::HttpToken => "t",
            Self::Metric => "m",
            Self::Queue => "q",
        }
    }
}

/// The id kind of argument `index` of `function`, if it is an id.
fn id_kind(direction: Direction, function: &str, index: usize) -> Option<IdKind> {
    let name = function.rsplit('.').next().unwrap_or(function);
    match (direction, name, index) {
        (Direction::HostToVm, "proxy_on_memory_allocate" | "malloc", _) => None,
        (Direction::HostToVm, "proxy_on_context_create", 0 | 1) => Some(IdKind::Context),
        (Direction::HostToVm, "proxy_on_http_call_response", 1) => Some(IdKind::HttpToken),
        (Direction::HostToVm, "proxy_on_queue_ready", 1) => Some(IdKind::Queue),
        (Direction::HostToVm, _, 0) => Some(IdKind::Context),
        (Direction::VmToHost, "proxy_set_effective_context", 0) => Some(IdKind::Context),
        (
            Direction::VmToHost,
            "proxy_increment_metric" | "proxy_record_metric" | "proxy_get_metric",
            0,
        ) => Some(IdKind::Metric),
        (Direction::VmToHost, "proxy_enqueue_shared_queue" | "proxy_dequeue_shared_queue", 0) => {
            Some(IdKind::Queue)
        }
        _ => None,
    }
}

/// Renames ids by order of first appearance; the root context is `root`.
#[derive(Default)]
struct Ids {
    root: Option<u64>,
    names: HashMap<(IdKind, u64), String>,
    counts: HashMap<IdKind, usize>,
}

impl Ids {
    fn name(&mut self, kind: IdKind, id: u64) -> String {
        if kind == IdKind::Context {
            if id == 0 {
                return "0".into();
            }
            if self.root == Some(id) {
                return "root".into();
            }
        }
        if let Some(n) = self.names.get(&(kind, id)) {
            return n.clone();
        }
        let count = self.counts.entry(kind).or_insert(0);
        *count += 1;
        let n = format!("{}{}", kind.prefix(), count);
        self.names.insert((kind, id), n.clone());
        n
    }
}

impl Step {
    /// The step for `call` at `depth` (normalisation rules applied; see
    /// `harness/docs/trace.md`).
    fn from_call(call: &Call, depth: usize, ids: &mut Ids) -> Step {
        let allocation = call.direction == Direction::HostToVm && depth > 0;
        let keep: Vec<usize> = match call.direction {
            // Rule `allocations`: the size is the size of data, the result a guest address.
            _ if allocation => Vec::new(),
            Direction::HostToVm => (0..call.args.len()).collect(),
            Direction::VmToHost => value_args(&call.function).to_vec(),
        };
        let args = keep
            .into_iter()
            .filter_map(|i| {
                let v = *call.args.get(i)?;
                Some(match id_kind(call.direction, &call.function, i) {
                    Some(kind) => ids.name(kind, v),
                    None => v.to_string(),
                })
            })
            .collect();
        let result = match &call.result {
            None => "(no return)".to_string(),
            Some(_) if allocation => "-".to_string(),
            Some(r) => r.clone(),
        };
        Step {
            depth,
            direction: call.direction,
            function: call.function.clone(),
            args,
            result,
        }
    }
}

fn flatten(call: &Call, depth: usize, ids: &mut Ids, out: &mut Vec<Step>) {
    out.push(Step::from_call(call, depth, ids));
    for c in &call.children {
        flatten(c, depth + 1, ids, out);
    }
}

/// A VM's trace, normalised and grouped by context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Normalised {
    /// Calls on the root context (and the module's start), in order.
    pub root: Vec<Step>,
    /// Each stream's calls, streams in creation order.
    pub streams: Vec<Vec<Step>>,
}

/// Normalises one VM's trace: ids renamed, meaningless arguments and
/// results dropped, calls grouped into the root context's and each
/// stream's (a stream is a context created with a parent; its calls are
/// the callbacks whose first argument is its id).
pub fn normalise(vm: &VmTrace) -> Normalised {
    let mut ids = Ids::default();
    let mut out = Normalised::default();
    let mut stream_of: HashMap<u64, usize> = HashMap::new();
    for call in &vm.calls {
        let context = call.args.first().copied();
        let is_create = call.function == "proxy_on_context_create";
        if is_create && call.args.get(1) == Some(&0) && ids.root.is_none() {
            ids.root = context;
        }
        let stream = match context {
            Some(ctx) if is_create && call.args.get(1).is_some_and(|&p| p != 0) => {
                out.streams.push(Vec::new());
                stream_of.insert(ctx, out.streams.len() - 1);
                Some(out.streams.len() - 1)
            }
            Some(ctx) if call.function != "_initialize" => stream_of.get(&ctx).copied(),
            _ => None,
        };
        let mut steps = Vec::new();
        flatten(call, 0, &mut ids, &mut steps);
        match stream {
            Some(i) => out.streams[i].extend(steps),
            None => out.root.extend(steps),
        }
    }
    out
}

/// A difference between two traces that a [`compare`] caller declares
/// expected, with its reason; each use is reported by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// In stream `stream` (0-based), Envoy's `proxy_on_request_headers`
    /// sees `extra` more headers than the harness's: the headers Envoy's
    /// connection manager adds before any filter (`x-request-id`,
    /// `x-forwarded-proto`) which the harness does not emulate.
    EnvoyAddedRequestHeaders {
        /// The stream.
        stream: usize,
        /// How many headers Envoy added.
        extra: u64,
    },
    /// In stream `stream`, Envoy's `proxy_on_response_headers` sees `extra`
    /// more headers than the harness's: `x-envoy-upstream-service-time`,
    /// which Envoy's router adds to an upstream's response before the
    /// filters (the harness replays the response as recorded).
    EnvoyAddedResponseHeaders {
        /// The stream.
        stream: usize,
        /// How many headers Envoy added.
        extra: u64,
    },
    /// In stream `stream`, the callbacks' header counts of one callback
    /// (`function`) differ because the two sides were given different input
    /// for it, for the reason `why` (e.g. a callout answered by a stub).
    DifferentInput {
        /// The stream.
        stream: usize,
        /// The callback, e.g. `proxy_on_http_call_response`.
        function: String,
        /// Which argument (0-based) differs.
        arg: usize,
        /// Why.
        why: String,
    },
}

impl Known {
    fn name(&self) -> &'static str {
        match self {
            Self::EnvoyAddedRequestHeaders { .. } => "envoy-hcm-request-headers",
            Self::EnvoyAddedResponseHeaders { .. } => "envoy-router-response-headers",
            Self::DifferentInput { .. } => "different-input",
        }
    }

    /// Whether this explains `envoy` vs `harness` at the same place of `stream`.
    fn explains(&self, stream: Option<usize>, envoy: &Step, harness: &Step) -> bool {
        let same_but = |arg: usize| {
            envoy.function == harness.function
                && envoy.depth == harness.depth
                && envoy.result == harness.result
                && envoy.args.len() == harness.args.len()
                && envoy
                    .args
                    .iter()
                    .zip(&harness.args)
                    .enumerate()
                    .all(|(i, (a, b))| i == arg || a == b)
        };
        let more_headers = |callback: &str, s: usize, extra: u64| {
            stream == Some(s)
                && envoy.function == callback
                && same_but(1)
                && matches!(
                    (envoy.args[1].parse::<u64>(), harness.args[1].parse::<u64>()),
                    (Ok(e), Ok(h)) if e == h + extra
                )
        };
        match self {
            Self::EnvoyAddedRequestHeaders { stream: s, extra } => {
                more_headers("proxy_on_request_headers", *s, *extra)
            }
            Self::EnvoyAddedResponseHeaders { stream: s, extra } => {
                more_headers("proxy_on_response_headers", *s, *extra)
            }
            Self::DifferentInput {
                stream: s,
                function,
                arg,
                ..
            } => stream == Some(*s) && envoy.function == *function && same_but(*arg),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::EnvoyAddedRequestHeaders { extra, .. } => format!(
                "Envoy's connection manager added {extra} request header(s) before the filters (x-request-id, x-forwarded-proto); the harness does not"
            ),
            Self::EnvoyAddedResponseHeaders { extra, .. } => format!(
                "Envoy's router added {extra} response header(s) before the filters (x-envoy-upstream-service-time); the recorded response has none"
            ),
            Self::DifferentInput { why, .. } => why.clone(),
        }
    }
}

/// One difference found by [`compare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `root` or `stream N` (1-based).
    pub section: String,
    /// Envoy's step (`None`: only the harness made this call).
    pub envoy: Option<Step>,
    /// The harness's step (`None`: only Envoy made this call).
    pub harness: Option<Step>,
    /// The [`Known`] rule that explains it (its name and reason), if any.
    pub explained: Option<(&'static str, String)>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |s: &Option<Step>| {
            s.as_ref()
                .map_or("(nothing)".to_string(), |s| s.to_string())
        };
        write!(
            f,
            "{}: envoy `{}` / harness `{}`",
            self.section,
            side(&self.envoy).trim_start(),
            side(&self.harness).trim_start()
        )?;
        if let Some((name, why)) = &self.explained {
            write!(f, " [known: {name}: {why}]")?;
        }
        Ok(())
    }
}

/// What [`compare`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Every difference, explained or not, in order.
    pub differences: Vec<Difference>,
}

impl Comparison {
    /// The differences no [`Known`] rule explains.
    pub fn unexplained(&self) -> Vec<&Difference> {
        self.differences
            .iter()
            .filter(|d| d.explained.is_none())
            .collect()
    }

    /// The differences a [`Known`] rule explains (named, never silent).
    pub fn explained(&self) -> Vec<&Difference> {
        self.differences
            .iter()
            .filter(|d| d.explained.is_some())
            .collect()
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.differences.is_empty() {
            return write!(f, "no differences");
        }
        for d in &self.differences {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Aligns two step lists (longest common subsequence), pairing up a call
/// only one side made with a call of the same function the other side made
/// at the same place.
fn diff<'a>(a: &'a [Step], b: &'a [Step]) -> Vec<(Option<&'a Step>, Option<&'a Step>)> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < n
            && j < m
            && a[i].function == b[j].function
            && a[i].depth == b[j].depth
            && lcs[i + 1][j + 1] >= lcs[i + 1][j].max(lcs[i][j + 1])
        {
            out.push((Some(&a[i]), Some(&b[j])));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push((None, Some(&b[j])));
            j += 1;
        } else {
            out.push((Some(&a[i]), None));
            i += 1;
        }
    }
    out
}

/// Compares Envoy's normalised trace with the harness's, root context and
/// stream by stream; `known` lists the differences expected, each used one
/// named in the result.
pub fn compare(envoy: &Normalised, harness: &Normalised, known: &[Known]) -> Comparison {
    let mut out = Comparison::default();
    let mut section = |name: String, stream: Option<usize>, a: &[Step], b: &[Step]| {
        for (e, h) in diff(a, b) {
            let explained = match (e, h) {
                (Some(e), Some(h)) => known
                    .iter()
                    .find(|k| k.explains(stream, e, h))
                    .map(|k| (k.name(), k.describe())),
                _ => None,
            };
            out.differences.push(Difference {
                section: name.clone(),
                envoy: e.cloned(),
                harness: h.cloned(),
                explained,
            });
        }
    };
    section("root".into(), None, &envoy.root, &harness.root);
    let empty = Vec::new();
    for i in 0..envoy.streams.len().max(harness.streams.len()) {
        let a = envoy.streams.get(i).unwrap_or(&empty);
        let b = harness.streams.get(i).unwrap_or(&empty);
        section(format!("stream {}", i + 1), Some(i), a, b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVOY: &str = "\
[2026-11-28 06:40:08.621][6004][trace][wasm] [source/extensions/common/wasm/wasm_vm.cc:39] [host->vm] _initialize()
[2026-11-28 06:40:08.621][6004][trace][wasm] [source/extensions/common/wasm/wasm_vm.cc:39] [host<-vm] _initialize return: void
[2026-11-28 06:40:08.621][6004][trace][wasm] [x.cc:39] [host->vm] proxy_on_context_create(1, 0)
[2026-11-28 06:40:08.621][6004][trace][wasm] [x.cc:39] [host<-vm] proxy_on_context_create return: void
[2026-11-28 06:40:12.138][6004][trace][wasm] [x.cc:39] [host->vm] proxy_on_context_create(7, 1)
[2026-11-28 06:40:12.138][5957][info][main] [x.cc:1] unrelated line
[2026-11-28 06:40:12.139][6004][trace][wasm] [x.cc:39] [host<-vm] proxy_on_context_create return: void
[2026-11-28 06:40:12.139][6004][trace][wasm] [x.cc:39] [host->vm] proxy_on_request_headers(7, 9, 1)
[2026-11-28 06:40:12.139][6004][trace][wasm] [x.cc:39] [vm->host] env.proxy_get_header_map_pairs(0, 1048160, 1048164)
[2026-11-28 06:40:12.139][6004][trace][wasm] [x.cc:39] [host->vm] proxy_on_memory_allocate(266)
[2026-11-28 06:40:12.139][6004][trace][wasm] [x.cc:39] [host<-vm] proxy_on_memory_allocate return: 1087520
[2026-11-28 06:40:12.139][6004][trace][wasm] [x.cc:39] [vm<-host] env.proxy_get_header_map_pairs return: 0
[2026-11-28 06:40:12.139][6004][debug][wasm] [x.cc:1148] wasm log headers: request header x-original-host: set
[2026-11-28 06:40:12.139][6004][trace][wasm] [x.cc:39] [host<-vm] proxy_on_request_headers return: 0
";

    const HARNESS: &[&str] = &[
        "[host->vm] _initialize()",
        "[host<-vm] _initialize return: void",
        "[host->vm] proxy_on_context_create(1, 0)",
        "[host<-vm] proxy_on_context_create return: void",
        "[host->vm] proxy_on_context_create(2, 1)",
        "[host<-vm] proxy_on_context_create return: void",
        "[host->vm] proxy_on_request_headers(2, 7, 1)",
        "[vm->host] env.proxy_get_header_map_pairs(0, 1048000, 1048004)",
        "[host->vm] proxy_on_memory_allocate(200)",
        "[host<-vm] proxy_on_memory_allocate return: 1087000",
        "[vm<-host] env.proxy_get_header_map_pairs return: 0",
        "[host<-vm] proxy_on_request_headers return: 0",
    ];

    #[test]
    fn envoy_lines_parse_into_a_tree_per_thread_and_vm() {
        let vms = parse(ENVOY.lines()).unwrap();
        assert_eq!(vms.len(), 1);
        assert_eq!(vms[0].thread.as_deref(), Some("6004"));
        assert!(vms[0].has_streams());
        let headers = &vms[0].calls[3];
        assert_eq!(headers.function, "proxy_on_request_headers");
        assert_eq!(headers.args, [7, 9, 1]);
        assert_eq!(
            headers.children[0].function,
            "env.proxy_get_header_map_pairs"
        );
        assert_eq!(
            headers.children[0].children[0].function,
            "proxy_on_memory_allocate"
        );
    }

    #[test]
    fn ids_pointers_and_allocations_are_normalised() {
        let envoy = normalise(&parse(ENVOY.lines()).unwrap()[0]);
        let shown: Vec<String> = envoy.streams[0].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "host->vm proxy_on_context_create(s1, root) -> void",
                "host->vm proxy_on_request_headers(s1, 9, 1) -> 0",
                "  vm->host env.proxy_get_header_map_pairs(0) -> 0",
                "    host->vm proxy_on_memory_allocate() -> -",
            ]
        );
    }

    #[test]
    fn differences_are_found_and_known_ones_named() {
        let envoy = normalise(&parse(ENVOY.lines()).unwrap()[0]);
        let harness = normalise(&parse(HARNESS.iter().copied()).unwrap()[0]);
        let plain = compare(&envoy, &harness, &[]);
        assert_eq!(plain.unexplained().len(), 1, "{plain}");
        assert!(
            plain
                .to_string()
                .contains("proxy_on_request_headers(s1, 9, 1)")
        );
        let wrong = [Known::EnvoyAddedRequestHeaders {
            stream: 0,
            extra: 1,
        }];
        assert_eq!(compare(&envoy, &harness, &wrong).unexplained().len(), 1);
        let right = [Known::EnvoyAddedRequestHeaders {
            stream: 0,
            extra: 2,
        }];
        let named = compare(&envoy, &harness, &right);
        assert!(named.unexplained().is_empty(), "{named}");
        assert_eq!(
            named.explained()[0].explained.as_ref().unwrap().0,
            "envoy-hcm-request-headers"
        );
    }

    #[test]
    fn a_declared_different_input_is_named_only_where_it_applies() {
        let envoy = normalise(&parse(ENVOY.lines()).unwrap()[0]);
        let harness = normalise(&parse(HARNESS.iter().copied()).unwrap()[0]);
        let declared = |stream, arg| Known::DifferentInput {
            stream,
            function: "proxy_on_request_headers".into(),
            arg,
            why: "the two requests differ on purpose".into(),
        };
        let c = compare(&envoy, &harness, &[declared(0, 1)]);
        assert!(c.unexplained().is_empty(), "{c}");
        assert!(
            c.to_string()
                .contains("[known: different-input: the two requests differ on purpose]")
        );
        // Another stream or another argument explains nothing.
        assert_eq!(
            compare(&envoy, &harness, &[declared(1, 1)])
                .unexplained()
                .len(),
            1
        );
        assert_eq!(
            compare(&envoy, &harness, &[declared(0, 2)])
                .unexplained()
                .len(),
            1
        );
    }

    #[test]
    fn a_chains_filters_are_read_apart() {
        let lines = [
            "[a] [host->vm] proxy_on_context_create(1, 0)",
            "[b] [host->vm] proxy_on_context_create(1, 0)",
            "[b] [host<-vm] proxy_on_context_create return: void",
            "[a] [host<-vm] proxy_on_context_create return: void",
        ];
        let vms = parse(lines).unwrap();
        assert_eq!(vms.len(), 2);
        assert_eq!(vms[0].thread.as_deref(), Some("[a]"));
        assert_eq!(vms[1].calls.len(), 1);
    }

    #[test]
    fn a_missing_call_is_a_difference() {
        let envoy = normalise(&parse(ENVOY.lines()).unwrap()[0]);
        let mut cut: Vec<&str> = HARNESS.to_vec();
        cut.drain(7..11);
        let harness = normalise(&parse(cut).unwrap()[0]);
        let c = compare(&envoy, &harness, &[]);
        assert!(c.unexplained().iter().any(|d| d.harness.is_none()
            && d.envoy.as_ref().unwrap().function == "env.proxy_get_header_map_pairs"));
    }

    #[test]
    fn unbalanced_and_bad_lines_are_errors_naming_the_line() {
        let e = parse(["[host->vm] a(1)", "[host<-vm] b return: 0"]).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse(["[host->vm] a(x)"]).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
