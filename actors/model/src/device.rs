//! Where the model runs: the CPU, an NVIDIA GPU through CUDA (feature `cuda`), or a GPU through
//! Vulkan (feature `vulkan`), and how `auto` picks one.

use std::path::Path;

/// A device the model can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// Burn's Flex with the crate's SIMD kernels.
    Cpu,
    /// burn-cuda, GPU 0.
    Cuda,
    /// burn-wgpu over Vulkan, the first adapter Vulkan lists (`CUBECL_WGPU_DEFAULT_DEVICE`
    /// picks another, e.g. `DiscreteGpu(0)`).
    Vulkan,
}

impl Device {
    /// The name `--device` and `model.device` take (`cpu`, `cuda`, `vulkan`).
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Vulkan => "vulkan",
        }
    }

    /// Whether this build can run on the device.
    pub fn built(self) -> bool {
        match self {
            Device::Cpu => true,
            Device::Cuda => cfg!(feature = "cuda"),
            Device::Vulkan => cfg!(feature = "vulkan"),
        }
    }
}

/// The names [`resolve`] takes.
pub const CHOICES: [&str; 4] = ["auto", "cpu", "cuda", "vulkan"];

/// Resolves a `--device` / `model.device` choice on this build and machine.
///
/// `auto` picks CUDA in a `cuda` build with `/dev/nvidia0`, else Vulkan in a `vulkan` build
/// with a GPU render node (`/dev/dri/renderD*`: a GPU driver is loaded — Mesa's CPU driver
/// lavapipe has none, so `auto` never runs the model on it), else the CPU.
///
/// # Errors
/// A message for an unknown name, or a device this build does not have.
pub fn resolve(choice: &str) -> Result<Device, String> {
    let device = match choice {
        "auto" => {
            return Ok(
                if Device::Cuda.built() && Path::new("/dev/nvidia0").exists() {
                    Device::Cuda
                } else if Device::Vulkan.built() && has_render_node(Path::new("/dev/dri")) {
                    Device::Vulkan
                } else {
                    Device::Cpu
                },
            )
        }
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda,
        "vulkan" => Device::Vulkan,
        other => {
            return Err(format!(
                "device {other:?} is not one of {}",
                CHOICES.join(", ")
            ))
        }
    };
    if !device.built() {
        return Err(format!(
            "device {}: this build has no {} support (build with --features {})",
            device.name(),
            device.name().to_uppercase(),
            device.name()
        ));
    }
    Ok(device)
}

/// Where the model runs now: the device the configuration resolved to until an instance on a
/// GPU fails, the CPU from then on (for the life of the process; a restart of the service or
/// of the box tries the GPU again).
///
/// Shared (cheap to clone) by the model actor's child spec, which asks [`Placement::start`]
/// at each (re)start which device to use, and by what shows the device: the console's
/// Overview, `#status all`, the `wecom_edge_model_device` metric. Every failure of an
/// instance on a GPU is taken as the GPU's — a CUDA or Vulkan error panics in a kernel launch
/// or a read-back, a lost device fails the load — because the CPU path always runs: the box
/// keeps answering, and the caller alerts and audits the move ([`Fallback`]).
#[derive(Debug, Clone)]
pub struct Placement {
    configured: Device,
    state: std::sync::Arc<std::sync::Mutex<PlacementState>>,
}

#[derive(Debug)]
struct PlacementState {
    now: Device,
    /// Starts so far (the first one uses the configured device).
    starts: u64,
    /// The last move to the CPU.
    fallback: Option<Fallback>,
}

/// A move of the model from a GPU to the CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The GPU that failed.
    pub from: Device,
    /// What failed: the instance on it ended abnormally (`"the model failed on the GPU"`),
    /// or the load on it returned this error.
    pub why: String,
}

impl Placement {
    /// The model placed on `configured` (what [`resolve`] gave).
    pub fn new(configured: Device) -> Placement {
        Placement {
            configured,
            state: std::sync::Arc::new(std::sync::Mutex::new(PlacementState {
                now: configured,
                starts: 0,
                fallback: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlacementState> {
        // The state is two plain fields, consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The device the configuration chose.
    pub fn configured(&self) -> Device {
        self.configured
    }

    /// The device the model runs on now (or is being started on).
    pub fn current(&self) -> Device {
        self.lock().now
    }

    /// The last move to the CPU, if there was one.
    pub fn fallback(&self) -> Option<Fallback> {
        self.lock().fallback.clone()
    }

    /// Called at each start of the model actor: the device to start on, and the move to the
    /// CPU this start makes, if it makes one. The first start uses the current device; a
    /// later one is a restart after the instance ended abnormally, so an instance that was
    /// on a GPU moves to the CPU.
    pub fn start(&self) -> (Device, Option<Fallback>) {
        let mut s = self.lock();
        s.starts += 1;
        if s.starts > 1 && s.now != Device::Cpu {
            let f = Fallback {
                from: s.now,
                why: "the model failed on the GPU".into(),
            };
            s.now = Device::Cpu;
            s.fallback = Some(f.clone());
            return (Device::Cpu, Some(f));
        }
        (s.now, None)
    }

    /// The load on `device` (a GPU) failed with `error`: the model moves to the CPU; the move.
    /// On the CPU itself there is nowhere to move: `None`, and the caller fails the start.
    pub fn load_failed(&self, device: Device, error: &str) -> Option<Fallback> {
        let mut s = self.lock();
        if device == Device::Cpu {
            return None;
        }
        let f = Fallback {
            from: device,
            why: error.to_string(),
        };
        s.now = Device::Cpu;
        s.fallback = Some(f.clone());
        Some(f)
    }

    /// One line for people: `cuda`, or `cpu (cuda failed: …)` after a fallback.
    pub fn describe(&self) -> String {
        let s = self.lock();
        match (&s.fallback, s.now) {
            (Some(f), Device::Cpu) => format!("cpu ({} failed: {})", f.from.name(), f.why),
            (_, d) => d.name().to_string(),
        }
    }
}

/// Whether `dir` holds a DRM render node (`renderD128`, …).
fn has_render_node(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_choices_and_errors() {
        assert_eq!(resolve("cpu"), Ok(Device::Cpu));
        let e = resolve("tpu").unwrap_err();
        assert!(e.contains("auto, cpu, cuda, vulkan"), "{e}");
        for d in [Device::Cuda, Device::Vulkan] {
            match resolve(d.name()) {
                Ok(got) => assert!(d.built() && got == d),
                Err(e) => {
                    assert!(!d.built());
                    assert!(e.contains(&format!("--features {}", d.name())), "{e}");
                }
            }
        }
        let auto = resolve("auto").unwrap();
        assert!(auto.built());
    }

    #[test]
    fn a_gpu_that_fails_moves_the_model_to_the_cpu() {
        let p = Placement::new(Device::Cuda);
        assert_eq!(p.start(), (Device::Cuda, None), "the first start: the GPU");
        assert_eq!((p.current(), p.describe().as_str()), (Device::Cuda, "cuda"));
        // The instance on the GPU ended abnormally: the restart is on the CPU, once.
        let (d, f) = p.start();
        assert_eq!(d, Device::Cpu);
        assert_eq!(f.unwrap().from, Device::Cuda);
        assert_eq!(
            p.start(),
            (Device::Cpu, None),
            "a CPU instance restarts on the CPU"
        );
        assert_eq!(p.current(), Device::Cpu);
        assert_eq!(p.configured(), Device::Cuda);
        assert!(
            p.describe().starts_with("cpu (cuda failed: "),
            "{}",
            p.describe()
        );

        // A load that fails on the GPU moves it too, with the load's error.
        let p = Placement::new(Device::Vulkan);
        assert_eq!(p.start(), (Device::Vulkan, None));
        let f = p.load_failed(Device::Vulkan, "no adapter").unwrap();
        assert_eq!((f.from, f.why.as_str()), (Device::Vulkan, "no adapter"));
        assert_eq!(p.describe(), "cpu (vulkan failed: no adapter)");
        assert_eq!(p.fallback(), Some(f));
        assert_eq!(
            p.load_failed(Device::Cpu, "bad file"),
            None,
            "the CPU has no fallback"
        );

        // On the CPU from the start: restarts stay there, nothing to report.
        let p = Placement::new(Device::Cpu);
        for _ in 0..3 {
            assert_eq!(p.start(), (Device::Cpu, None));
        }
        assert_eq!(p.fallback(), None);
    }

    #[test]
    fn render_nodes() {
        let dir = std::env::temp_dir().join(format!("wecom-edge-dri-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("card0"), b"").unwrap();
        assert!(!has_render_node(&dir));
        std::fs::write(dir.join("renderD128"), b"").unwrap();
        assert!(has_render_node(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!has_render_node(&dir));
    }
}
