"""The table of a GPU check (for `docs/kernels.md`): the harness's kernel times beside PyTorch's
cuDNN depthwise 7x7 convolution of the same shapes, timed in the same run.

    python3 gpu_report.py OUTPUT_DIR [--device cuda|cpu] [--repeats N]

Reads OUTPUT_DIR/harness.txt (what `build/cuda_harness` printed: the device,
the agreement line and "TIME shape batch fwd_ms fwd_bwd_ms" lines) and the
sanitizer logs beside it, times `torch.nn.functional.conv2d(groups=C)` forward
and forward+backward at each shape (NCHW and channels-last; the faster one is
the baseline) and prints Markdown. `--device cpu` runs the PyTorch side on the
CPU, to try this script without a GPU.
"""

import argparse
import pathlib
import re
import statistics
import time

import torch


def harness_results(text):
    """`(device, agreement, {(shape, batch): (fwd_ms, fwd_bwd_ms)})` of a harness log."""
    device = re.search(r"^device: (.*)$", text, re.M)
    agreement = re.search(r"^\d+ random cases, .*$", text, re.M)
    times = {(shape, int(batch)): (float(forward), float(step))
             for shape, batch, forward, step in re.findall(
                 r"^TIME (\S+) (\d+) (\S+) (\S+)$", text, re.M)}
    return (device.group(1) if device else "unknown device",
            agreement.group(0) if agreement else "no agreement line", times)


def sanitizer_summary(path):
    """The last line of a compute-sanitizer log ("ERROR SUMMARY: ..."), or why none."""
    if not path.exists():
        return "not run"
    lines = [line for line in path.read_text().splitlines() if "SUMMARY" in line]
    return lines[-1].strip("= ").strip() if lines else path.read_text().strip()[-200:]


def median_ms(step, device, repeats):
    """Median time of `step()` in ms (CUDA events on a GPU), after two warm-ups."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            begin = time.perf_counter()
            step()
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def depthwise_ms(size, channels, batch, device, repeats):
    """`(fwd_ms, fwd_bwd_ms)` of the faster layout of a 7x7 depthwise convolution."""
    best = None
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(batch, channels, size, size, device=device).to(memory_format=layout)
        x.requires_grad_(True)
        weight = torch.randn(channels, 1, 7, 7, device=device, requires_grad=True)
        forward = lambda: torch.nn.functional.conv2d(x, weight, padding=3, groups=channels)
        upstream = torch.randn_like(forward())

        def forward_backward():
            torch.autograd.grad(forward(), (x, weight), upstream)

        with torch.no_grad():
            forward_time = median_ms(forward, device, repeats)
        result = (forward_time, median_ms(forward_backward, device, repeats))
        best = result if best is None or result[1] < best[1] else best
    return best


def report(directory, device, repeats):
    harness = (directory / "harness.txt").read_text()
    name, agreement, times = harness_results(harness)
    torch.backends.cudnn.benchmark = True
    rows = []
    for (shape, batch), (forward, step) in times.items():  # the harness's order
        size, _, channels = (int(part) for part in shape.split("x"))
        base_forward, base_step = depthwise_ms(size, channels, batch, device, repeats)
        rows.append(f"| {shape} | {batch} | {forward:.3f} | {base_forward:.3f} | "
                    f"{forward / base_forward:.2f}x | {step:.3f} | {base_step:.3f} | "
                    f"{step / base_step:.2f}x |")
    baseline = (torch.cuda.get_device_name() if device == "cuda" else "CPU") + \
        f", PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    return "\n".join([
        f"Kernels on {name}; depthwise baseline on {baseline}; "
        f"{time.strftime('%Y-%m-%d')}.",
        f"Agreement: {agreement}",
        f"memcheck: {sanitizer_summary(directory / 'memcheck.txt')}; "
        f"racecheck: {sanitizer_summary(directory / 'racecheck.txt')}",
        "",
        "| shape | batch | kernel fwd ms | depthwise fwd ms | ratio | kernel fwd+bwd ms | "
        "depthwise fwd+bwd ms | ratio |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=pathlib.Path)
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(report(args.directory, args.device, args.repeats))


if __name__ == "__main__":
    main()
