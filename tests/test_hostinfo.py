"""Host detection from /proc and /sys files."""

from __future__ import annotations

from edge_sdk.hostinfo import read_host_info


def _fake(tmp_path, cpuinfo: str, meminfo: str, max_khz: str | None = None, governor: str | None = None):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text(cpuinfo)
    (proc / "meminfo").write_text(meminfo)
    cpufreq = tmp_path / "sys" / "cpu0" / "cpufreq"
    cpufreq.mkdir(parents=True)
    if max_khz:
        (cpufreq / "cpuinfo_max_freq").write_text(max_khz)
    if governor:
        (cpufreq / "scaling_governor").write_text(governor)
    return read_host_info(proc, tmp_path / "sys")


def test_raspberry_pi_5_cpuinfo(tmp_path):
    cpuinfo = (
        "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
        "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n\n"
        "Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
    )
    info = _fake(tmp_path, cpuinfo, "MemTotal:        8245216 kB\n", "2400000\n", "ondemand\n")
    assert info.isa == ("dotprod", "fp16", "neon")
    assert info.clock_mhz == 2400.0 and info.ram_mb == 8051 and info.governor == "ondemand"
    assert info.cpu_model == "Raspberry Pi 5 Model B Rev 1.0"


def test_x86_cpuinfo_without_cpufreq(tmp_path):
    cpuinfo = "model name\t: Some Xeon\ncpu MHz\t\t: 2999.998\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni\n"
    info = _fake(tmp_path, cpuinfo, "MemTotal: 1048576 kB\n")
    assert info.isa == ("avx", "avx2", "avx512-vnni", "avx512f", "fma", "sse4.2")
    assert info.clock_mhz == 2999.998 and info.ram_mb == 1024 and info.governor is None
    assert info.cores >= 1
