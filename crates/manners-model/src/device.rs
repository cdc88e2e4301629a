//! Picking the Burn backend at run time: the one place that names backends.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use crate::error::{ModelError, Result};

/// The backend a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A hardware GPU through wgpu when one exists, else `flex`.
    #[default]
    Auto,
    /// Pure-Rust CPU backend (SIMD + threads): the default on CPU.
    #[serde(alias = "cpu")]
    Flex,
    /// The ndarray CPU backend (deprecated upstream; kept for users who ask for it).
    Ndarray,
    /// wgpu: Vulkan, Metal, DX12 (any GPU vendor), or a software Vulkan driver.
    #[serde(alias = "gpu")]
    Wgpu,
    /// NVIDIA GPUs through CUDA (the opt-in Cargo feature `cuda`); collectives on NCCL.
    Cuda,
    /// AMD GPUs through ROCm/HIP (the opt-in Cargo feature `rocm`).
    Rocm,
    /// A device on another machine, served by `manners serve-device` (Burn's remote backend;
    /// the opt-in Cargo feature `remote`). Named by address: `ws://host:3000`.
    Remote,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Rocm => "rocm",
            BackendKind::Remote => "remote",
        }
    }

    /// The backends compiled into this build.
    pub fn compiled() -> Vec<BackendKind> {
        let mut v = Vec::new();
        if cfg!(feature = "flex") {
            v.push(BackendKind::Flex);
        }
        if cfg!(feature = "ndarray") {
            v.push(BackendKind::Ndarray);
        }
        if cfg!(feature = "wgpu") {
            v.push(BackendKind::Wgpu);
        }
        if cfg!(feature = "cuda") {
            v.push(BackendKind::Cuda);
        }
        if cfg!(feature = "rocm") {
            v.push(BackendKind::Rocm);
        }
        if cfg!(feature = "remote") {
            v.push(BackendKind::Remote);
        }
        v
    }

    /// Whether Burn's collective operations (`all_reduce`) exist on this backend: CUDA (NCCL)
    /// only, in Burn 0.22. Elsewhere gradients travel by device-to-device transfer.
    pub fn has_collectives(self) -> bool {
        self == BackendKind::Cuda
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendKind::Auto),
            "flex" | "cpu" => Ok(BackendKind::Flex),
            "ndarray" => Ok(BackendKind::Ndarray),
            "wgpu" | "gpu" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            "rocm" | "hip" => Ok(BackendKind::Rocm),
            "remote" => Ok(BackendKind::Remote),
            _ => Err(ModelError::UnknownBackend(s.to_string())),
        }
    }
}

/// A device ready to use, with what was chosen.
#[derive(Clone, Debug)]
pub struct DeviceChoice {
    /// The device, without autodiff (call `.autodiff()` for training).
    pub device: Device,
    /// The backend actually used (`Auto` resolved).
    pub backend: BackendKind,
    /// Human description, e.g. `wgpu (NVIDIA H100, Vulkan)` or `flex (cpu, 2 threads)`.
    pub description: String,
}

/// The most bytes one tensor may take on a GPU device, and the device's name: a GPU runtime
/// allocates a tensor as one buffer and binds it whole to a kernel, so a tensor above the
/// adapter's storage-buffer limit (as the runtime applies it: cubecl's largest page) cannot
/// run there; wgpu stops the run with a validation panic on every thread instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferLimit {
    pub bytes: u64,
    pub device: String,
}

impl BufferLimit {
    /// The limit of `device`; `None` on CPU backends and remote devices, which have none here.
    pub fn of(device: &Device) -> Option<Self> {
        #[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
        if let burn::backend::DispatchDevice::Cube(d) = device.as_dispatch().clone().inner() {
            let client = d.client();
            let props = client.properties();
            return Some(BufferLimit {
                bytes: props.memory.max_page_size,
                device: props.identity.name.clone(),
            });
        }
        let _ = device;
        None
    }

    /// The smallest limit among `devices` (a data-parallel run is bound by its smallest).
    pub fn of_all<'a>(devices: impl IntoIterator<Item = &'a Device>) -> Option<Self> {
        devices
            .into_iter()
            .filter_map(Self::of)
            .min_by_key(|l| l.bytes)
    }

    /// A clear error when a tensor of `elements` `f32` values (`what`) exceeds the limit, before
    /// any kernel meets it; `hint` says what the user can change.
    pub fn check(&self, elements: u64, what: impl FnOnce() -> String, hint: &str) -> Result<()> {
        let bytes = elements.saturating_mul(4);
        if bytes <= self.bytes {
            return Ok(());
        }
        Err(ModelError::BufferTooLarge {
            what: what(),
            bytes,
            limit: self.bytes,
            device: self.device.clone(),
            hint: hint.to_string(),
        })
    }
}

/// The wgpu device for test suites. `None`, said on stderr, when `MANNERS_SKIP_WGPU` is set or
/// no adapter exists; but when `MANNERS_REQUIRE_WGPU` is set (CI sets it after installing a
/// Vulkan driver) a missing adapter panics, so a broken driver install cannot pass as a skip.
pub fn wgpu_for_tests() -> Option<DeviceChoice> {
    if std::env::var_os("MANNERS_SKIP_WGPU").is_some() {
        eprintln!("note: wgpu skipped (MANNERS_SKIP_WGPU is set)");
        return None;
    }
    match select_device(BackendKind::Wgpu) {
        Ok(c) => {
            eprintln!("note: testing {}", c.description);
            Some(c)
        }
        Err(e) if std::env::var_os("MANNERS_REQUIRE_WGPU").is_some() => {
            panic!("MANNERS_REQUIRE_WGPU is set but wgpu has no adapter: {e}")
        }
        Err(e) => {
            eprintln!("note: wgpu skipped: {e}");
            None
        }
    }
}

/// Builds the device for `kind`. `Auto` takes a hardware GPU adapter through wgpu when one
/// exists and `flex` otherwise; `Wgpu` also accepts a software (CPU) Vulkan adapter and fails
/// cleanly when there is no adapter at all.
pub fn select_device(kind: BackendKind) -> Result<DeviceChoice> {
    match kind {
        BackendKind::Auto => {
            #[cfg(feature = "cuda")]
            if !gpu_devices(BackendKind::Cuda).is_empty() {
                return gpu_choice(BackendKind::Cuda, 0);
            }
            #[cfg(feature = "rocm")]
            if !gpu_devices(BackendKind::Rocm).is_empty() {
                return gpu_choice(BackendKind::Rocm, 0);
            }
            #[cfg(feature = "wgpu")]
            if let Some(gpu) = wgpu_probe::adapters().into_iter().find(|a| a.hardware) {
                return Ok(wgpu_choice(&gpu));
            }
            #[cfg(feature = "flex")]
            return select_device(BackendKind::Flex);
            #[allow(unreachable_code)]
            {
                let first = BackendKind::compiled()
                    .into_iter()
                    .next()
                    .ok_or_else(|| ModelError::BackendNotCompiled("flex".into()))?;
                select_device(first)
            }
        }
        BackendKind::Flex => {
            #[cfg(feature = "flex")]
            return Ok(DeviceChoice {
                device: Device::flex(),
                backend: kind,
                description: format!("flex (cpu, {} threads)", cpu_threads()),
            });
            #[allow(unreachable_code)]
            Err(ModelError::BackendNotCompiled("flex".into()))
        }
        BackendKind::Ndarray => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(DeviceChoice {
                device: Device::ndarray(),
                backend: kind,
                description: format!("ndarray (cpu, {} threads)", cpu_threads()),
            });
            #[allow(unreachable_code)]
            Err(ModelError::BackendNotCompiled("ndarray".into()))
        }
        BackendKind::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                let adapters = wgpu_probe::adapters();
                let best = adapters.iter().find(|a| a.hardware).or(adapters.first());
                return match best {
                    Some(a) => Ok(wgpu_choice(a)),
                    None => Err(ModelError::NoAdapter(
                        " (no Vulkan, Metal or DX12 adapter; on Linux without a GPU install Mesa's \
                         software Vulkan driver: apt-get install mesa-vulkan-drivers libvulkan1)"
                            .into(),
                    )),
                };
            }
            #[allow(unreachable_code)]
            Err(ModelError::BackendNotCompiled("wgpu".into()))
        }
        BackendKind::Cuda | BackendKind::Rocm => gpu_choice(kind, 0),
        BackendKind::Remote => Err(ModelError::BadDevices(
            "a remote device is named by its server's address: --devices ws://HOST:PORT (start \
             `manners serve-device` there)"
                .into(),
        )),
    }
}

/// Connects to device `index` of the server at `url` (`ws://host:port`), started there with
/// `manners serve-device` (Burn's remote backend; tensors and operations travel over the
/// WebSocket, the autodiff graph stays here).
#[allow(unused_variables)]
pub fn remote_device(url: &str, index: usize) -> Result<DeviceChoice> {
    #[cfg(feature = "remote")]
    {
        use burn::tensor::remote::RemoteHost;
        let host = RemoteHost::websocket(url);
        let device = Device::remote_options(&host)
            .device_index(index)
            .init()
            .map_err(|e| ModelError::NoDevice(format!("{url}#{index}: {e}")))?;
        Ok(DeviceChoice {
            device,
            backend: BackendKind::Remote,
            description: format!("{url}#{index}"),
        })
    }
    #[cfg(not(feature = "remote"))]
    Err(ModelError::BackendNotCompiled("remote".into()))
}

/// Serves `devices` to other machines on `listener` (Burn's remote backend over WebSocket)
/// until the process is stopped: what `manners serve-device` runs. All devices must be of one
/// backend family (CubeCL runtimes together, or one CPU backend).
#[allow(unused_variables)]
pub fn serve_devices(devices: Vec<Device>, listener: std::net::TcpListener) -> Result<()> {
    #[cfg(feature = "remote")]
    {
        use burn::tensor::server::{RemoteServer, WebSocketTransport};
        let devices = devices.into_iter().map(|d| d.without_autodiff());
        RemoteServer::new(devices)
            .serve(WebSocketTransport::from_listener(listener))
            .map_err(|e| ModelError::NoDevice(format!("serving devices: {e}")))
    }
    #[cfg(not(feature = "remote"))]
    Err(ModelError::BackendNotCompiled("remote".into()))
}

/// The devices Burn sees for a CUDA or ROCm build (empty without a driver or without the
/// feature).
#[allow(unused_variables)]
fn gpu_devices(kind: BackendKind) -> Vec<Device> {
    use burn::tensor::DeviceType;
    let filter: Option<DeviceType> = match kind {
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Some(DeviceType::Cuda),
        #[cfg(feature = "rocm")]
        BackendKind::Rocm => Some(DeviceType::Rocm),
        _ => None,
    };
    match filter {
        // Enumeration loads the driver library; a broken install must not take us down.
        Some(f) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Device::enumerate(f).into_iter().collect()
        }))
        .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// The `index`-th CUDA or ROCm device, or why there is none.
#[allow(unused_variables)]
fn gpu_choice(kind: BackendKind, index: usize) -> Result<DeviceChoice> {
    let compiled = (kind == BackendKind::Cuda && cfg!(feature = "cuda"))
        || (kind == BackendKind::Rocm && cfg!(feature = "rocm"));
    if !compiled {
        return Err(ModelError::BackendNotCompiled(kind.name().into()));
    }
    let found = gpu_devices(kind);
    let Some(device) = found.get(index).cloned() else {
        let what = match kind {
            BackendKind::Cuda => "CUDA devices (is the NVIDIA driver installed?)",
            _ => "ROCm devices (is the ROCm runtime installed?)",
        };
        return Err(ModelError::NoDevice(format!(
            "{}:{index}: this machine has {} {what}",
            kind.name(),
            found.len()
        )));
    };
    Ok(DeviceChoice {
        device,
        backend: kind,
        description: format!("{}:{index}", kind.name()),
    })
}

/// How the gradients of a data-parallel step are summed across devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduce {
    /// Collectives where every device has them (CUDA: NCCL), else transfers.
    #[default]
    Auto,
    /// Each device's gradients are moved to the first device (Burn's device-to-device
    /// transfer) and summed there; works on every backend.
    Transfer,
    /// Burn's `all_reduce` (NCCL on CUDA).
    Collective,
}

impl FromStr for Reduce {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Reduce::Auto),
            "transfer" => Ok(Reduce::Transfer),
            "collective" | "all-reduce" | "allreduce" | "nccl" => Ok(Reduce::Collective),
            _ => Err(ModelError::BadDevices(format!(
                "unknown gradient reduction `{s}`: expected auto, transfer or collective"
            ))),
        }
    }
}

/// The devices a run trains on: the first holds the model and the optimiser, evaluates and
/// samples; each takes a share of every optimiser step's micro-batches.
#[derive(Clone, Debug)]
pub struct DeviceSet {
    pub devices: Vec<DeviceChoice>,
    pub reduce: Reduce,
}

impl From<DeviceChoice> for DeviceSet {
    fn from(d: DeviceChoice) -> Self {
        DeviceSet {
            devices: vec![d],
            reduce: Reduce::Auto,
        }
    }
}

impl From<&DeviceChoice> for DeviceSet {
    fn from(d: &DeviceChoice) -> Self {
        d.clone().into()
    }
}

impl DeviceSet {
    /// The first device (model, optimiser, evaluation, sampling).
    pub fn main(&self) -> &DeviceChoice {
        &self.devices[0]
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The reduction a step uses: `Auto` resolved (collectives only when every device is on a
    /// backend that has them and there is more than one device). Asking for collectives where
    /// Burn has none is an error here, not a panic mid-step.
    pub fn resolved_reduce(&self) -> Result<Reduce> {
        let all_collective = self.devices.iter().all(|d| d.backend.has_collectives())
            && self
                .devices
                .iter()
                .all(|d| d.backend == self.devices[0].backend);
        match self.reduce {
            _ if self.devices.len() < 2 => Ok(Reduce::Transfer),
            Reduce::Auto if all_collective => Ok(Reduce::Collective),
            Reduce::Auto | Reduce::Transfer => Ok(Reduce::Transfer),
            Reduce::Collective if all_collective => Ok(Reduce::Collective),
            Reduce::Collective => Err(ModelError::BadDevices(format!(
                "collective reduction needs every device on CUDA (NCCL): Burn 0.22 implements \
                 all_reduce only there (wgpu has no device transport, flex and ndarray none); \
                 devices: {}",
                self.describe()
            ))),
        }
    }

    /// `wgpu (llvmpipe, Vulkan) + wgpu:default (...)`.
    pub fn describe(&self) -> String {
        self.devices
            .iter()
            .map(|d| d.description.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// Parses a device list: a count (`2`: that many devices of `backend`), or comma-separated
/// names: `cuda:0,cuda:1`, `rocm:0`, `wgpu:0,wgpu:1` (the n-th wgpu adapter, GPUs first),
/// `wgpu:default` / `wgpu:cpu` (Burn's default and CPU wgpu devices, two separate devices even
/// when they are one adapter), `flex`, `ndarray`. The first device is the main one.
pub fn parse_devices(spec: &str, backend: BackendKind) -> Result<DeviceSet> {
    let spec = spec.trim();
    let bad = |m: String| ModelError::BadDevices(m);
    let mut out: Vec<DeviceChoice> = Vec::new();
    if let Ok(n) = spec.parse::<usize>() {
        if n == 0 {
            return Err(bad("0: at least one device is needed".into()));
        }
        let kind = match backend {
            BackendKind::Auto => select_device(BackendKind::Auto)?.backend,
            k => k,
        };
        match kind {
            BackendKind::Flex | BackendKind::Ndarray if n > 1 => {
                return Err(bad(format!(
                    "{n} on {kind}: the CPU is one device (its threads already use every \
                     core); several devices need GPUs (--backend cuda or wgpu)"
                )));
            }
            BackendKind::Flex | BackendKind::Ndarray => out.push(select_device(kind)?),
            _ => {
                for i in 0..n {
                    out.push(named_device(kind, &i.to_string())?);
                }
            }
        }
    } else {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.contains("://") {
                // `ws://host:port` or `ws://host:port#1` (the server's second device).
                let (url, index) = item.split_once('#').unwrap_or((item, "0"));
                let index: usize = index.parse().map_err(|_| {
                    bad(format!(
                        "device `{item}`: expected ws://HOST:PORT or ws://HOST:PORT#N"
                    ))
                })?;
                let choice = remote_device(url, index)?;
                if out.iter().any(|d| d.description == choice.description) {
                    return Err(bad(format!("device `{item}` is listed twice")));
                }
                out.push(choice);
                continue;
            }
            let (name, index) = item.split_once(':').unwrap_or((item, "0"));
            let kind: BackendKind = name
                .parse()
                .map_err(|_| bad(format!("device `{item}`: unknown backend `{name}`")))?;
            if kind == BackendKind::Auto {
                return Err(bad(format!(
                    "device `{item}`: name a backend (cuda:0, wgpu:1, flex, ...)"
                )));
            }
            let choice = named_device(kind, index)?;
            if out.iter().any(|d| d.device == choice.device) {
                return Err(bad(format!("device `{item}` is listed twice")));
            }
            out.push(choice);
        }
        if out.is_empty() {
            return Err(bad(format!("`{spec}` names no device")));
        }
    }
    Ok(DeviceSet {
        devices: out,
        reduce: Reduce::Auto,
    })
}

/// One device by backend and index (or, for wgpu, `default` / `cpu`).
fn named_device(kind: BackendKind, index: &str) -> Result<DeviceChoice> {
    let bad = |m: String| ModelError::BadDevices(m);
    match kind {
        BackendKind::Flex | BackendKind::Ndarray => {
            if index != "0" && index != "cpu" {
                return Err(bad(format!(
                    "{kind}:{index}: {kind} has one device, the CPU ({kind} or {kind}:0)"
                )));
            }
            select_device(kind)
        }
        BackendKind::Wgpu => wgpu_named(index),
        BackendKind::Cuda | BackendKind::Rocm => {
            let i: usize = index.parse().map_err(|_| {
                bad(format!(
                    "{kind}:{index}: expected a device number ({kind}:0, {kind}:1, ...)"
                ))
            })?;
            gpu_choice(kind, i)
        }
        BackendKind::Auto | BackendKind::Remote => select_device(kind),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_named(index: &str) -> Result<DeviceChoice> {
    use burn::tensor::DeviceKind;
    let adapters = wgpu_probe::adapters();
    let first = adapters.first().map(|a| format!("{}, {}", a.name, a.api));
    let named = |kind: DeviceKind, what: &str| -> Result<DeviceChoice> {
        let Some(first) = &first else {
            return Err(ModelError::NoAdapter(String::new()));
        };
        Ok(DeviceChoice {
            device: Device::wgpu(kind),
            backend: BackendKind::Wgpu,
            description: format!("wgpu:{what} ({first})"),
        })
    };
    match index {
        "default" => named(DeviceKind::DefaultDevice, "default"),
        "cpu" => named(DeviceKind::Cpu, "cpu"),
        i => {
            let i: usize = i.parse().map_err(|_| {
                ModelError::BadDevices(format!(
                    "wgpu:{i}: expected an adapter number (wgpu:0, wgpu:1, ...), `default` or \
                     `cpu`"
                ))
            })?;
            match adapters.get(i) {
                Some(a) => {
                    let mut c = wgpu_choice(a);
                    c.description = format!("wgpu:{i} ({}, {})", a.name, a.api);
                    Ok(c)
                }
                None => Err(ModelError::NoDevice(format!(
                    "wgpu:{i}: this machine has {} wgpu adapter(s){}",
                    adapters.len(),
                    if adapters.len() == 1 {
                        " (two logical devices on one adapter: wgpu:default,wgpu:cpu)"
                    } else {
                        ""
                    }
                ))),
            }
        }
    }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_named(_index: &str) -> Result<DeviceChoice> {
    Err(ModelError::BackendNotCompiled("wgpu".into()))
}

/// What each compiled backend sees on this machine, for `manners info --devices`: backend,
/// then one line per device (`cuda:0`, `wgpu:0 (NVIDIA ..., Vulkan)`, ...).
pub fn list_devices() -> Vec<(BackendKind, Vec<String>)> {
    let mut out = Vec::new();
    for kind in BackendKind::compiled() {
        let seen = match kind {
            BackendKind::Flex | BackendKind::Ndarray => {
                vec![format!("{kind}:0 (cpu, {} threads)", cpu_threads())]
            }
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => wgpu_probe::adapters()
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let soft = if a.hardware { "" } else { ", software" };
                    format!("wgpu:{i} ({}, {}{soft})", a.name, a.api)
                })
                .collect(),
            BackendKind::Cuda | BackendKind::Rocm => {
                let mut v = Vec::new();
                for (i, d) in gpu_devices(kind).into_iter().enumerate() {
                    #[cfg(any(feature = "cuda", feature = "rocm"))]
                    let name = d.identity().map(|id| format!(" ({})", id.name));
                    #[cfg(not(any(feature = "cuda", feature = "rocm")))]
                    let name: Option<String> = {
                        let _ = d;
                        None
                    };
                    v.push(format!("{kind}:{i}{}", name.unwrap_or_default()));
                }
                v
            }
            _ => Vec::new(),
        };
        out.push((kind, seen));
    }
    out
}

fn cpu_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(feature = "wgpu")]
fn wgpu_choice(a: &wgpu_probe::Adapter) -> DeviceChoice {
    use burn::tensor::DeviceKind;
    let kind = match a.kind {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(a.index),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(a.index),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(a.index),
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
        wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
    };
    DeviceChoice {
        device: Device::wgpu(kind),
        backend: BackendKind::Wgpu,
        description: format!("wgpu ({}, {})", a.name, a.api),
    }
}

#[cfg(feature = "wgpu")]
mod wgpu_probe {
    /// An adapter wgpu can open.
    #[derive(Clone, Debug)]
    pub struct Adapter {
        pub name: String,
        pub api: String,
        pub kind: wgpu::DeviceType,
        /// Index among adapters of the same kind (how Burn's `DeviceKind` counts).
        pub index: usize,
        /// A real GPU (not a software rasteriser).
        pub hardware: bool,
    }

    /// Adapters on Vulkan, Metal and DX12, GPUs first. The GL path is not probed: on software
    /// drivers it can hang.
    pub fn adapters() -> Vec<Adapter> {
        let probe = || {
            let backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            futures_lite::future::block_on(instance.enumerate_adapters(backends))
                .iter()
                .map(wgpu::Adapter::get_info)
                .collect::<Vec<_>>()
        };
        // A broken Vulkan loader must not take the program down.
        let infos = std::panic::catch_unwind(probe).unwrap_or_default();
        let mut counts = [0usize; 5];
        let mut out: Vec<Adapter> = infos
            .into_iter()
            .map(|info| {
                let slot = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => 0,
                    wgpu::DeviceType::IntegratedGpu => 1,
                    wgpu::DeviceType::VirtualGpu => 2,
                    wgpu::DeviceType::Cpu => 3,
                    wgpu::DeviceType::Other => 4,
                };
                let index = counts[slot];
                counts[slot] += 1;
                Adapter {
                    name: info.name.clone(),
                    api: format!("{:?}", info.backend),
                    kind: info.device_type,
                    index,
                    hardware: !matches!(
                        info.device_type,
                        wgpu::DeviceType::Cpu | wgpu::DeviceType::Other
                    ),
                }
            })
            .collect();
        out.sort_by_key(|a| match a.kind {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2 small's token embedding against lavapipe's 128 MiB limit (the sizes wgpu's own
    /// validation error gives: 154,389,504 bytes over 134,217,728): a clear error naming the
    /// tensor, both sizes, the device and the way out; a tensor of exactly the limit fits.
    #[test]
    fn a_tensor_over_the_buffer_limit_is_a_clear_error() {
        let limit = BufferLimit {
            bytes: 128 << 20,
            device: "llvmpipe".into(),
        };
        let exact = (128u64 << 20) / 4;
        assert!(limit.check(exact, || unreachable!(), "").is_ok());
        let err = limit
            .check(exact + 1, || "the table".into(), "use less")
            .unwrap_err();
        assert!(
            matches!(err, ModelError::BufferTooLarge { bytes, .. } if bytes == (128 << 20) + 4)
        );
        let err = limit
            .check(
                50_257 * 768,
                || "the token embedding".into(),
                "run on the CPU",
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the token embedding needs one buffer of 147.2 MiB but llvmpipe binds at most 128.0 \
             MiB per buffer (the adapter's storage-buffer limit): run on the CPU"
        );
        // The smallest limit of a set binds; CPU devices have none.
        assert_eq!(BufferLimit::of(&Device::flex()), None);
        assert_eq!(
            BufferLimit::of_all([&Device::flex(), &Device::flex()]),
            None
        );
    }

    /// The weight checked is the largest of the shape, by hand: GPT-2 small's and SmolLM2's
    /// token embeddings ([50,257, 768] = 38.6M values against the MLP's 2.4M; [49,152, 576]
    /// against 0.9M), a tiny vocabulary with a wide MLP's projection; and a model whose largest
    /// weight fits passes the check while one a value over does not.
    #[test]
    fn the_model_check_takes_its_largest_weight() {
        use crate::{Gpt2Config, LlamaConfig, ModelConfig};
        let small = ModelConfig::Gpt2(Gpt2Config::gpt2());
        assert_eq!(
            small.largest_weight(),
            ("the token embedding", [50_257, 768])
        );
        let smol = ModelConfig::Llama(LlamaConfig::smollm2_135m());
        assert_eq!(
            smol.largest_weight(),
            ("the token embedding", [49_152, 576])
        );
        let wide = ModelConfig::Gpt2(Gpt2Config {
            n_inner: Some(4096),
            ..Gpt2Config::tiny(100)
        });
        assert_eq!(wide.largest_weight(), ("an MLP projection", [32, 4096]));
        let at = |bytes: u64| BufferLimit {
            bytes,
            device: "a small adapter".into(),
        };
        assert!(small.check_limit(Some(&at(50_257 * 768 * 4))).is_ok());
        assert!(small.check_limit(None).is_ok());
        let err = small
            .check_limit(Some(&at(50_257 * 768 * 4 - 1)))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the token embedding of gpt2 12L/768d/12h")
                && err.contains("([50257, 768], f32) needs one buffer of 147.2 MiB")
                && err.contains("--backend flex"),
            "{err}"
        );
    }

    #[test]
    fn parses_backend_names() {
        assert_eq!("flex".parse::<BackendKind>().unwrap(), BackendKind::Flex);
        assert_eq!("WGPU".parse::<BackendKind>().unwrap(), BackendKind::Wgpu);
        assert_eq!("cuda".parse::<BackendKind>().unwrap(), BackendKind::Cuda);
        let err = "tpu".parse::<BackendKind>().unwrap_err();
        assert!(err.to_string().contains("unknown backend `tpu`"), "{err}");
    }

    fn devices_err(spec: &str, backend: BackendKind) -> String {
        parse_devices(spec, backend).unwrap_err().to_string()
    }

    #[test]
    fn device_lists_parse_or_say_what_is_wrong() {
        let one = parse_devices("flex", BackendKind::Auto).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one.main().backend, BackendKind::Flex);
        assert_eq!(one.resolved_reduce().unwrap(), Reduce::Transfer);
        let one = parse_devices("1", BackendKind::Flex).unwrap();
        assert_eq!(one.len(), 1);
        let two = parse_devices("flex, ndarray", BackendKind::Auto).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two.devices[1].backend, BackendKind::Ndarray);
        assert_eq!(two.resolved_reduce().unwrap(), Reduce::Transfer);
        let e = devices_err("2", BackendKind::Flex);
        assert!(e.contains("the CPU is one device"), "{e}");
        let e = devices_err("flex,flex:0", BackendKind::Auto);
        assert!(e.contains("listed twice"), "{e}");
        let e = devices_err("flex:1", BackendKind::Auto);
        assert!(e.contains("has one device"), "{e}");
        let e = devices_err("tpu:0", BackendKind::Auto);
        assert!(e.contains("unknown backend `tpu`"), "{e}");
        let e = devices_err("0", BackendKind::Flex);
        assert!(e.contains("at least one device"), "{e}");
        let e = devices_err(" , ", BackendKind::Flex);
        assert!(e.contains("names no device"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = devices_err("cuda:0,cuda:1", BackendKind::Auto);
            assert!(e.contains("not compiled") && e.contains("`cuda`"), "{e}");
        }
        // Collectives where Burn has none: refused up front.
        let mut set = parse_devices("flex,ndarray", BackendKind::Auto).unwrap();
        set.reduce = Reduce::Collective;
        let e = set.resolved_reduce().unwrap_err().to_string();
        assert!(e.contains("only there"), "{e}");
        assert_eq!("nccl".parse::<Reduce>().unwrap(), Reduce::Collective);
        assert!("ring".parse::<Reduce>().is_err());
    }
}
