# Shared by image/build, image/update and image/smoke-test (sourced, not run).
#
# Disk layout (GPT, 1 MiB aligned), partition names are what the system finds them by:
#   1 esp              EFI system partition (FAT32): systemd-boot, loader entries, a kernel and
#                      initrd per slot under /wecom-edge/{a,b}/
#   2 wecom-edge-a     root slot A (ext4)
#   3 wecom-edge-b     root slot B (ext4)
#   4 wecom-edge-data  data (ext4), mounted at /data and bound over /etc/wecom-edge (config),
#                      /var/lib/private (service state) and /var/log/journal

# shellcheck shell=bash

ESP_MIB=${ESP_MIB:-320}
SLOT_MIB=${SLOT_MIB:-1536}
DATA_MIB=${DATA_MIB:-512}
BOOT_TRIES=${BOOT_TRIES:-3}
KERNEL_CMDLINE_BASE="rw console=tty0 console=ttyS0,115200 panic=10 systemd.firstboot=off"

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

log() {
  echo "== $(basename "$0"): $*" >&2
}

need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap, chroot, device nodes)"
}

# Installs the Debian packages providing the given commands when any is missing.
# Usage: need_tools cmd:package ...
need_tools() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] || need_packages "${missing[@]}"
}

# Installs Debian packages (by name) as root.
need_packages() {
  need_root
  log "installing $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Prints "START SIZE" (in 512-byte sectors) of the partition named $2 in the GPT of $1.
part_extent() {
  local line
  line=$(sfdisk --dump "$1" 2>/dev/null | grep "name=\"$2\"") || die "$1: no partition named $2"
  local start size
  start=$(sed -n 's/.*start= *\([0-9]*\).*/\1/p' <<<"$line")
  size=$(sed -n 's/.*size= *\([0-9]*\).*/\1/p' <<<"$line")
  echo "$start $size"
}

# The ESP of image $1 as an mtools drive spec: "IMAGE@@OFFSET".
esp_spec() {
  local start size
  read -r start size < <(part_extent "$1" esp)
  echo "$1@@$((start * 512))"
}

# Writes file $2 into partition $3 of image/device $1, refusing one that does not fit. What the
# partition held before is gone: in an image file its range is zeroed first (a hole punched, so
# the file stays sparse and the zero runs of $2 can be skipped); a block device gets every byte.
write_partition() {
  local start size bytes
  read -r start size < <(part_extent "$1" "$3")
  bytes=$(stat -c %s "$2")
  [ "$bytes" -le $((size * 512)) ] || die "$2 ($bytes bytes) does not fit partition $3 ($((size * 512)) bytes)"
  if [ -f "$1" ]; then
    fallocate --punch-hole --offset $((start * 512)) --length $((size * 512)) "$1"
    dd if="$2" of="$1" bs=1M seek=$((start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
  else
    dd if="$2" of="$1" bs=4M seek=$((start * 512)) oflag=seek_bytes,direct conv=notrunc,fsync status=none
  fi
}

# Loader entries on the ESP of $1, one file name per line.
loader_entries() {
  MTOOLS_SKIP_CHECK=1 mdir -b -i "$(esp_spec "$1")" ::/loader/entries 2>/dev/null | sed 's|.*/||' | grep '\.conf$' || true
}

# Loader entries on the ESP of $1 with their version, "FILE VERSION" per line (0 when none).
entry_versions() {
  local spec e ver
  spec=$(esp_spec "$1")
  while read -r e; do
    [ -n "$e" ] || continue
    ver=$(MTOOLS_SKIP_CHECK=1 mtype -i "$spec" "::/loader/entries/$e" | sed -n 's/^version *\([0-9]*\).*/\1/p')
    echo "$e ${ver:-0}"
  done < <(loader_entries "$1")
}

# The slot to keep on $1 (a or b) when writing an update: the blessed entry (no +N counter:
# it booted to boot-complete.target) with the highest version; on a disk that never booted,
# the first build (the lowest version not marked bad). The other slot — never proven, or
# older — is the one to overwrite.
keep_slot() {
  local e ver best="" best_ver=-1 first="" first_ver=999999999
  while read -r e ver; do
    case "$e" in *+0-*.conf | *+0.conf) continue ;; esac
    case "$e" in
      *+*) ;;
      *) if [ "$ver" -gt "$best_ver" ]; then best_ver=$ver; best=$e; fi ;;
    esac
    if [ "$ver" -lt "$first_ver" ]; then first_ver=$ver; first=$e; fi
  done < <(entry_versions "$1")
  [ -n "$best" ] || best=$first
  case "$best" in
    wecom-edge-a*) echo a ;;
    wecom-edge-b*) echo b ;;
    *) echo none ;;
  esac
}

# The highest entry version on $1 (0 when none).
max_version() {
  entry_versions "$1" | awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }'
}

# Installs slot $3's kernel ($4) and initrd ($5) on the ESP of $1 and writes its loader entry
# with version $2 and boot counting (+BOOT_TRIES), removing the slot's older entries.
# $6: extra kernel command line.
install_slot_entry() {
  local img=$1 version=$2 slot=$3 kernel=$4 initrd=$5 extra=${6:-}
  local spec e tmp
  spec=$(esp_spec "$img")
  export MTOOLS_SKIP_CHECK=1
  mmd -D s -i "$spec" "::/wecom-edge" 2>/dev/null || true
  mmd -D s -i "$spec" "::/wecom-edge/$slot" 2>/dev/null || true
  mcopy -o -i "$spec" "$kernel" "::/wecom-edge/$slot/vmlinuz"
  mcopy -o -i "$spec" "$initrd" "::/wecom-edge/$slot/initrd.img"
  while read -r e; do
    case "$e" in "wecom-edge-$slot.conf" | "wecom-edge-$slot+"*) mdel -i "$spec" "::/loader/entries/$e" ;; esac
  done < <(loader_entries "$img")
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
title      wecom-edge (slot $slot, build $version)
sort-key   wecom-edge
version    $version
linux      /wecom-edge/$slot/vmlinuz
initrd     /wecom-edge/$slot/initrd.img
options    root=PARTLABEL=wecom-edge-$slot $KERNEL_CMDLINE_BASE${extra:+ $extra}
EOF
  mcopy -o -i "$spec" "$tmp" "::/loader/entries/wecom-edge-$slot+$BOOT_TRIES.conf"
  rm -f "$tmp"
}
