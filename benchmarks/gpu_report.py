"""``gpu_check.md``: the device check's JSON report (gpu_check.py) as markdown tables."""

from __future__ import annotations

GIB = 2**30
STEP_HEADER = ["batch", "step ms (min)", "examples/s", "TFLOP/step", "MFU", "peak GiB", "XLA temp GiB"]
STEP_HEADER += ["compile s"]

PRECISION_LINE = "loss bf16 {loss_bf16:.6g} vs fp32 {loss_fp32:.6g}: relative difference {loss_rel_diff:.2e}"
RESUME_LINE = (
    "killed before step {gate_step} (checkpoint {checkpoint_step}), resumed at step "
    "{b_first_step_after_resume}: losses {verdict} over {steps_compared} steps"
)
KILL_LINE = (
    "- {steps} steps, checkpoint every {checkpoint_step}; run B got SIGKILL while it waited for step "
    "{gate_step} (exit {b_killed_returncode}), its restart began at step {b_first_step_after_resume}"
)


def _gib(n) -> str:
    return "n/a" if n is None else f"{n / GIB:.2f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def headline(key: str, section: dict) -> str:
    """One line per section for the summary table."""
    if section.get("status") != "ok":
        return section.get("error", "")
    r = section["result"]
    if key == "parity":
        return "{passed}/{ran} passed of {selected} selected ({platform})".format(**r)
    if key == "precision":
        return PRECISION_LINE.format_map(r)
    if key == "resume":
        verdict = "equal" if r["losses_equal"] else ("close" if r["losses_close"] else "DIFFERENT")
        return RESUME_LINE.format(verdict=verdict, **r)
    if key.startswith("train_step"):
        speed = "{:.1f} ms/step, {examples_per_s:.1f} examples/s".format(r["step_s"] * 1e3, **r)
        return f"{speed}, MFU {_pct(r['mfu'])}, peak {_gib(r['peak_bytes'])} GiB"
    if key == "detect":
        best = max(r["rows"], key=lambda row: row["audio_s_per_s"])
        return (
            "{audio_s_per_s:.1f} s of audio per s (batch {max_batch}, ".format(**best) + f"{r['audio_size']})"
        )
    return ""


def _step_details(r: dict) -> list[str]:
    row = [
        "SED {sed_clips} + global {global_batch}".format(**r),
        f"{r['step_s'] * 1e3:.1f}",
        f"{r['examples_per_s']:.1f}",
        f"{r['flops_per_step'] / 1e12:.2f}",
        _pct(r["mfu"]),
        _gib(r["peak_bytes"]),
        _gib(r["temp_bytes"]),
        f"{r['compile_s']:.0f}",
    ]
    return ["{model}, {compute_dtype}, remat {remat}.".format(**r), "", *table(STEP_HEADER, [row])]


def _resume_details(r: dict) -> list[str]:
    return [
        f"- {r['config']} {' '.join(r['overrides'])}",
        KILL_LINE.format_map(r),
        "- equal: {losses_equal}, close (rtol 1e-5): {losses_close}, largest difference {max_abs_diff:.3g}, "
        "missing steps: {missing_steps}".format(**r),
        "- steps logged before and after the kill agree: {repeated_steps_equal} {repeated_steps}".format(**r),
        f"- xla_gpu_deterministic_ops: {r['deterministic_ops']}; {' '.join(r['notes'])}",
    ]


def _details(key: str, r: dict) -> list[str]:
    if key == "parity":
        line = "Platform {platform}, fp32 matmuls at precision {matmul_precision}; exit {exit_code}.".format(
            **r
        )
        return [line] + [f"- FAILED {name}" for name in r["failures"]]
    if key == "precision":
        rows = [["loss", f"{r['loss_fp32']:.6g}", f"{r['loss_bf16']:.6g}", f"{r['loss_rel_diff']:.2e}"]]
        rows += [[k, f"{a:.6g}", f"{b:.6g}", f"{d:.2e}"] for k, (a, b, d) in sorted(r["metrics"].items())]
        intro = "{model}, SED {sed_clips} + global {global_batch}, one batch, one set of weights.".format(**r)
        return [intro, "", *table(["value", "fp32", "bf16", "relative difference"], rows)]
    if key.startswith("train_step"):
        return _step_details(r)
    if key == "resume":
        return _resume_details(r)
    if key == "detect":
        rows = [
            [row["max_batch"], row["windows"], f"{row['wall_s']:.2f}", f"{row['audio_s_per_s']:.1f}"]
            for row in r["rows"]
        ]
        intro = "{:g} min of noise, {queries} queries, hop {hop_s:g} s, {audio_size}.".format(
            r["audio_s"] / 60, **r
        )
        return [intro, "", *table(["max batch", "windows", "wall s", "audio s per s"], rows)]
    return []


def markdown(report: dict) -> str:
    device = report.get("device", {})
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    kind = f"{device.get('device_kind', 'n/a')} x{device.get('devices', '?')}"
    lines = [
        f"# Device check (issue 25): {report['mode']}",
        "",
        f"{report['date']}; device: {kind} ({_gib(device.get('memory_bytes'))} GiB for jax); "
        f"nvidia-smi: {report['host']['nvidia_smi']}; {report['host']['cpu_cores']} CPU cores.",
        "",
        f"Versions: {versions}.",
        "",
        report["peak_note"] + ".",
        "",
    ]
    summary = [
        [key, s.get("status"), f"{s.get('seconds', 0):.0f}", headline(key, s)]
        for key, s in report["sections"].items()
    ]
    lines += table(["section", "status", "s", "result"], summary)
    for key, section in report["sections"].items():
        lines += ["", f"## {key}", ""]
        if section.get("status") == "ok":
            lines += _details(key, section["result"])
        else:
            lines += [f"{section.get('status')}: {section.get('error', '')}", ""]
            tail = section.get("traceback") or section.get("log_tail") or []
            lines += ["```", *tail, "```"] if tail else []
    return "\n".join(lines) + "\n"
