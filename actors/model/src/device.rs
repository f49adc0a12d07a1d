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
