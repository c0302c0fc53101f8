//! The QEMU command lines `pigen boot` runs, and the sizes and kernel command lines they use.
//! Pure: golden tests below.

use std::path::{Path, PathBuf};

use super::detect::{PiMachine, PiSerial};

/// How QEMU runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Emulation: works everywhere, slow (an amd64 image reaches login in about 1–2 minutes).
    Tcg,
    /// Hardware virtualisation (/dev/kvm): PC images of the host's architecture only.
    Kvm,
}

/// The PC guest's CPU family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcArch {
    X86_64,
    I386,
}

/// What the PC boots with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's default BIOS (SeaBIOS): GRUB from the MBR / BIOS boot partition.
    Bios,
    /// OVMF (UEFI) from this file: GRUB from the EFI system partition.
    Uefi(PathBuf),
}

/// One QEMU run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Machine {
    Pc {
        arch: PcArch,
        firmware: Firmware,
    },
    /// A Raspberry Pi image: kernel, initramfs and device tree read out of it.
    Pi {
        machine: PiMachine,
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        dtb: Option<PathBuf>,
        append: String,
        serial: PiSerial,
    },
}

impl Machine {
    pub fn program(&self) -> &'static str {
        match self {
            Machine::Pc {
                arch: PcArch::X86_64,
                ..
            } => "qemu-system-x86_64",
            Machine::Pc {
                arch: PcArch::I386, ..
            } => "qemu-system-i386",
            Machine::Pi { machine, .. } => match machine {
                PiMachine::Raspi3b | PiMachine::VirtArm64 => "qemu-system-aarch64",
                PiMachine::Raspi2b | PiMachine::VirtArm => "qemu-system-arm",
            },
        }
    }

    /// The Debian package with [`Machine::program`].
    pub fn package(&self) -> &'static str {
        match self {
            Machine::Pc { .. } => "qemu-system-x86",
            Machine::Pi { .. } => "qemu-system-arm",
        }
    }

    /// The serial device the guest's console is on.
    pub fn console(&self) -> &'static str {
        match self {
            Machine::Pc { .. } => "ttyS0",
            Machine::Pi { serial, .. } => serial.tty(),
        }
    }

    /// A short description for the report.
    pub fn describe(&self) -> String {
        match self {
            Machine::Pc { arch, firmware } => format!(
                "PC {}, {}",
                match arch {
                    PcArch::X86_64 => "x86_64",
                    PcArch::I386 => "i386",
                },
                match firmware {
                    Firmware::Bios => "BIOS (SeaBIOS)".to_string(),
                    Firmware::Uefi(_) => "UEFI (OVMF)".to_string(),
                }
            ),
            Machine::Pi { machine, .. } => match machine {
                PiMachine::Raspi3b => "Raspberry Pi 3 B (raspi3b)".to_string(),
                PiMachine::Raspi2b => "Raspberry Pi 2 B (raspi2b)".to_string(),
                PiMachine::VirtArm => "generic ARMv7 (virt)".to_string(),
                PiMachine::VirtArm64 => "generic arm64 (virt)".to_string(),
            },
        }
    }
}

/// The command line: `disk` is the qcow2 overlay, `socket` the unix socket QEMU listens on
/// for the console (it waits for the connection before starting the guest, so no output is
/// lost).
pub fn argv(machine: &Machine, accel: Accel, disk: &Path, socket: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec![machine.program().to_string()];
    let mut push = |args: &[&str]| a.extend(args.iter().map(|s| s.to_string()));
    match machine {
        Machine::Pc { firmware, .. } => {
            match accel {
                Accel::Tcg => push(&["-accel", "tcg"]),
                Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            }
            push(&["-m", "1024", "-smp", "2"]);
            push(&[
                "-drive",
                &format!("file={},format=qcow2,if=ide,cache=unsafe", disk.display()),
            ]);
            push(&["-nic", "user,model=e1000"]);
            if let Firmware::Uefi(ovmf) = firmware {
                push(&["-bios", &ovmf.display().to_string()]);
            }
        }
        Machine::Pi {
            machine,
            kernel,
            initrd,
            dtb,
            append,
            serial,
        } => {
            push(&["-accel", "tcg"]);
            if *serial == PiSerial::MiniUart {
                // raspi3b's first serial port is the PL011; the console is on the second.
                push(&["-serial", "null"]);
            }
            match machine {
                PiMachine::Raspi3b => push(&["-M", "raspi3b", "-m", "1G"]),
                PiMachine::Raspi2b => push(&["-M", "raspi2b", "-m", "1G"]),
                PiMachine::VirtArm => push(&[
                    "-M",
                    "virt",
                    "-cpu",
                    "cortex-a15",
                    "-m",
                    "1024",
                    "-smp",
                    "2",
                ]),
                PiMachine::VirtArm64 => push(&[
                    "-M",
                    "virt",
                    "-cpu",
                    "cortex-a53",
                    "-m",
                    "1024",
                    "-smp",
                    "2",
                ]),
            }
            push(&["-kernel", &kernel.display().to_string()]);
            if let Some(initrd) = initrd {
                push(&["-initrd", &initrd.display().to_string()]);
            }
            if let Some(dtb) = dtb {
                push(&["-dtb", &dtb.display().to_string()]);
            }
            push(&["-append", append]);
            match machine {
                PiMachine::Raspi3b | PiMachine::Raspi2b => push(&[
                    "-drive",
                    &format!("file={},format=qcow2,if=sd,cache=unsafe", disk.display()),
                ]),
                PiMachine::VirtArm | PiMachine::VirtArm64 => {
                    push(&[
                        "-drive",
                        &format!(
                            "file={},format=qcow2,if=none,id=disk,cache=unsafe",
                            disk.display()
                        ),
                        "-device",
                        "virtio-blk-device,drive=disk",
                        // Not `-nic user,model=virtio-net-device`: qemu-system-arm refuses
                        // that model name for -nic.
                        "-netdev",
                        "user,id=net",
                        "-device",
                        "virtio-net-device,netdev=net",
                    ]);
                }
            }
        }
    }
    push(&[
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "chardev:console",
        "-chardev",
        &format!(
            "socket,id=console,path={},server=on,wait=on",
            socket.display()
        ),
    ]);
    a
}

/// Size of the overlay disk the guest sees: room for the first-boot resize (at least 1 GiB
/// more than the image) and a power of two, as QEMU's SD card model requires.
pub fn disk_size(image_bytes: u64) -> u64 {
    (image_bytes + (1 << 30)).next_power_of_two()
}

/// First-boot hooks of Raspberry Pi OS that resize the disk and reboot: with the kernel
/// command line fixed on QEMU's command line they would run on every boot.
const DROPPED_ARGS: &[&str] = &[
    "init=/usr/lib/raspberrypi-sys-mods/firstboot",
    "init=/usr/lib/raspi-config/init_resize.sh",
];

/// The kernel command line for a Raspberry Pi image: `cmdline.txt`, minus first-boot hooks
/// and consoles on the serial port QEMU uses, plus that console and a getty on it (systemd's
/// `systemd.wants=`, for images that only start one on the screen). Under `virt` the SD card
/// is a virtio disk: `root=/dev/mmcblk0pN` becomes `/dev/vdaN`.
pub fn pi_append(cmdline_txt: &str, machine: PiMachine, serial: PiSerial) -> String {
    let console = serial.tty();
    let virt = matches!(machine, PiMachine::VirtArm | PiMachine::VirtArm64);
    let mut args: Vec<String> = cmdline_txt
        .split_whitespace()
        .filter(|a| !DROPPED_ARGS.contains(a))
        .filter(|a| !a.starts_with(&format!("console={console}")))
        .map(|a| match a.strip_prefix("root=/dev/mmcblk0p") {
            Some(n) if virt => format!("root=/dev/vda{n}"),
            _ => a.to_string(),
        })
        .collect();
    args.push(format!("console={console},115200"));
    args.push(format!("systemd.wants=serial-getty@{console}.service"));
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(a: &[String]) -> String {
        a.join(" ")
    }

    const TAIL: &str = "-display none -monitor none -serial chardev:console \
        -chardev socket,id=console,path=/t/console.sock,server=on,wait=on";

    #[test]
    fn pc_bios_tcg() {
        let m = Machine::Pc {
            arch: PcArch::X86_64,
            firmware: Firmware::Bios,
        };
        assert_eq!(
            join(&argv(&m, Accel::Tcg, Path::new("/t/disk.qcow2"), Path::new("/t/console.sock"))),
            format!(
                "qemu-system-x86_64 -accel tcg -m 1024 -smp 2 \
                 -drive file=/t/disk.qcow2,format=qcow2,if=ide,cache=unsafe -nic user,model=e1000 {TAIL}"
            )
        );
        assert_eq!(m.describe(), "PC x86_64, BIOS (SeaBIOS)");
    }

    #[test]
    fn pc_uefi_kvm_and_i386() {
        let m = Machine::Pc {
            arch: PcArch::X86_64,
            firmware: Firmware::Uefi("/usr/share/ovmf/OVMF.fd".into()),
        };
        assert_eq!(
            join(&argv(
                &m,
                Accel::Kvm,
                Path::new("/t/disk.qcow2"),
                Path::new("/t/console.sock")
            )),
            format!(
                "qemu-system-x86_64 -accel kvm -cpu host -m 1024 -smp 2 \
                 -drive file=/t/disk.qcow2,format=qcow2,if=ide,cache=unsafe -nic user,model=e1000 \
                 -bios /usr/share/ovmf/OVMF.fd {TAIL}"
            )
        );
        let m = Machine::Pc {
            arch: PcArch::I386,
            firmware: Firmware::Bios,
        };
        assert_eq!(
            argv(&m, Accel::Tcg, Path::new("d"), Path::new("s"))[0],
            "qemu-system-i386"
        );
    }

    #[test]
    fn raspi3b() {
        let m = Machine::Pi {
            machine: PiMachine::Raspi3b,
            kernel: "/t/vmlinuz".into(),
            initrd: Some("/t/initrd.img".into()),
            dtb: Some("/t/bcm2837-rpi-3-b.dtb".into()),
            append: "root=PARTUUID=1a2b3c4d-02 rootwait console=ttyS1,115200".into(),
            serial: PiSerial::MiniUart,
        };
        let a = argv(
            &m,
            Accel::Tcg,
            Path::new("/t/disk.qcow2"),
            Path::new("/t/console.sock"),
        );
        assert_eq!(
            join(&a),
            format!(
                "qemu-system-aarch64 -accel tcg -serial null -M raspi3b -m 1G -kernel /t/vmlinuz \
                 -initrd /t/initrd.img -dtb /t/bcm2837-rpi-3-b.dtb \
                 -append root=PARTUUID=1a2b3c4d-02 rootwait console=ttyS1,115200 \
                 -drive file=/t/disk.qcow2,format=qcow2,if=sd,cache=unsafe {TAIL}"
            )
        );
        // The kernel command line is one argument.
        assert_eq!(
            a[a.iter().position(|x| x == "-append").unwrap() + 1],
            "root=PARTUUID=1a2b3c4d-02 rootwait console=ttyS1,115200"
        );
        assert_eq!(m.console(), "ttyS1");
    }

    #[test]
    fn armhf_virt() {
        let m = Machine::Pi {
            machine: PiMachine::VirtArm,
            kernel: "/t/k".into(),
            initrd: Some("/t/i".into()),
            dtb: None,
            append: "root=/dev/vda2".into(),
            serial: PiSerial::Pl011,
        };
        assert_eq!(
            join(&argv(
                &m,
                Accel::Tcg,
                Path::new("/t/disk.qcow2"),
                Path::new("/t/console.sock")
            )),
            format!(
                "qemu-system-arm -accel tcg -M virt -cpu cortex-a15 -m 1024 -smp 2 -kernel /t/k \
                 -initrd /t/i -append root=/dev/vda2 \
                 -drive file=/t/disk.qcow2,format=qcow2,if=none,id=disk,cache=unsafe \
                 -device virtio-blk-device,drive=disk -netdev user,id=net \
                 -device virtio-net-device,netdev=net {TAIL}"
            )
        );
    }

    #[test]
    fn kernel_command_lines() {
        assert_eq!(
            pi_append(
                "console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rootfstype=ext4 fsck.repair=yes rootwait\n",
                PiMachine::Raspi3b,
                PiSerial::Pl011
            ),
            "console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rootfstype=ext4 \
             fsck.repair=yes rootwait console=ttyAMA0,115200 systemd.wants=serial-getty@ttyAMA0.service"
        );
        // Debian's raspi-firmware with the mainline device tree: the mini UART, named once.
        assert_eq!(
            pi_append(
                "console=ttyS1,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rw fsck.repair=yes net.ifnames=0 rootwait\n",
                PiMachine::Raspi3b,
                PiSerial::MiniUart
            ),
            "console=tty1 root=PARTUUID=1a2b3c4d-02 rw fsck.repair=yes net.ifnames=0 rootwait \
             console=ttyS1,115200 systemd.wants=serial-getty@ttyS1.service"
        );
        assert_eq!(
            pi_append(
                "console=ttyAMA0,115200 root=/dev/mmcblk0p2 rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot",
                PiMachine::VirtArm,
                PiSerial::Pl011
            ),
            "root=/dev/vda2 rootwait quiet console=ttyAMA0,115200 systemd.wants=serial-getty@ttyAMA0.service"
        );
        assert_eq!(
            pi_append("root=/dev/mmcblk0p2", PiMachine::Raspi3b, PiSerial::Pl011),
            "root=/dev/mmcblk0p2 console=ttyAMA0,115200 systemd.wants=serial-getty@ttyAMA0.service"
        );
    }

    #[test]
    fn disk_sizes() {
        const GIB: u64 = 1 << 30;
        assert_eq!(disk_size(2 * GIB), 4 * GIB);
        assert_eq!(disk_size(3 * GIB), 4 * GIB);
        assert_eq!(disk_size(3 * GIB + 1), 8 * GIB);
        assert_eq!(disk_size(1_900_000_000), 4 * GIB);
    }
}
