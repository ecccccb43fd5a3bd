"""Uplink bytes, accuracy and privacy of the payload policies on the same frames and the same routing.

Runs one job through ``cepr run`` (shipped edge model, the reference cloud expert that ``base_url: auto`` starts)
in a scratch folder: the repository's Threshold algorithm with one threshold, and the cloud module's
``payload_policy`` set to ``fixed`` (the shipped summary + 640x480 JPEG q85), ``AdaptivePayload`` (default table),
``PrivacyAware`` (default radius) and ``[AdaptivePayload, PrivacyAware]``: one test case each. The routing is the
same in every case (the Threshold policy reads the edge result only), so the cases differ only in what the hard
samples send. Prints, per policy: accuracy with its 95% Wilson interval, safety recall, the mean request body per
sample sent (bytes, counted at the HTTP transport), the share of requests that carried an image,
``bandwidth_saving`` (against every sample sent with the same payload policy: each case has its own baseline),
``bandwidth_saving_vs_png`` (against every full-resolution PNG: one baseline for all) and
``privacy_redacted_share``.

    python benchmarks/payload_policies.py --data datasets/cloud-robotics-synth-full/640x480/test-index.txt \\
        --threshold 0.8
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fusion_rules import finished_cases, make_job, run_job

POLICIES = ("fixed", "AdaptivePayload", "PrivacyAware", ["AdaptivePayload", "PrivacyAware"])
METRICS = ("accuracy", "n", "safety_recall", "edge_ratio", "uplink_bytes", "bandwidth_saving",
           "bandwidth_saving_vs_png", "privacy_redacted_share")


def _privacy_vs_labels(samples, policy) -> dict:
    """For a case with PrivacyAware: of the samples sent, how many frames truly hold a person within its radius
    (the labels' people_count at that distance), how many of those still went with their image (the edge missed
    the person), and how many were redacted without one."""
    radius = next((p["radius_m"] for p in policy or [] if p["name"] == "PrivacyAware"), None)
    if radius is None:
        return {"truly_sensitive": None, "missed": None, "over_redacted": None}
    from cepr.data.tasks import TaskParams, ground_truth

    params = TaskParams(people_distance=float(radius))
    sensitive = missed = over = 0
    for s in samples:
        c = s.get("cloud")
        if not c:
            continue
        truly = ground_truth(c["label_path"], params)["people_count"] != "0"
        sensitive += truly
        missed += truly and c["payload"]["mode"] != "summary"
        over += c["privacy_redacted"] and not truly
    return {"truly_sensitive": sensitive, "missed": missed, "over_redacted": over}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="datasets/cloud-robotics-synth-full/640x480/test-index.txt",
                    help="the test index (txt) to run on")
    ap.add_argument("--threshold", type=float, default=0.8, help="the Threshold policy's threshold")
    ap.add_argument("--limit", type=int, default=None, help="first K samples only")
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder)")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)

    from cepr.metrics.joint import wilson_interval

    index = Path(a.data).resolve()
    if not index.is_file():
        ap.error(f"--data {a.data}: no such index file (generate the set with `cepr datasets synth`)")
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="cepr-payload-"))
    work.mkdir(parents=True, exist_ok=True)
    make_job(work, index, a.threshold, {"payload_policy": list(POLICIES)}, metrics=METRICS, name="payload-policies")
    rc = run_job(work, a.limit)
    if rc:
        return rc
    rows = []
    for rec, samples in finished_cases(work):
        sent = [s["cloud"] for s in samples if s.get("cloud")]
        policy = sent[0]["payload_policy"] if sent else None
        name = "fixed" if not policy else " + ".join(p["name"] for p in policy)
        right = sum(bool(s.get("correct")) for s in samples)
        m = rec["metrics"]
        rows.append({"policy": name, "n": len(samples), "accuracy": m["accuracy"],
                     "accuracy_ci": wilson_interval(right, len(samples)), "safety_recall": m["safety_recall"],
                     "sent": len(sent), "bytes_per_request": sum(c["bytes_up"] for c in sent) / max(len(sent), 1),
                     "image_share": sum(c["payload"]["mode"] != "summary" for c in sent) / max(len(sent), 1),
                     "bandwidth_saving": m["bandwidth_saving"],
                     "bandwidth_saving_vs_png": m["bandwidth_saving_vs_png"], **_privacy_vs_labels(samples, policy),
                     "privacy_redacted_share": m["privacy_redacted_share"]})
    order = ["fixed", "AdaptivePayload", "PrivacyAware", "AdaptivePayload + PrivacyAware"]
    rows.sort(key=lambda r: order.index(r["policy"]) if r["policy"] in order else 99)
    print(f"\npayload policies on {index} ({rows[0]['n'] if rows else 0} samples), Threshold {a.threshold:g} "
          f"({rows[0]['sent'] if rows else 0} sent); job in {work}")
    print("| payload_policy | accuracy [95% CI] | safety recall | bytes per request | requests with image | "
          "bandwidth_saving | bandwidth_saving_vs_png | privacy_redacted_share |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["accuracy_ci"]
        print(f"| {r['policy']} | {100 * r['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | "
              f"{100 * r['safety_recall']:.1f}% | {r['bytes_per_request']:,.0f} | {100 * r['image_share']:.1f}% | "
              f"{r['bandwidth_saving']:.3f} | {r['bandwidth_saving_vs_png']:.4f} | {r['privacy_redacted_share']:.3f} |")
    print("\nPrivacyAware against the labels (samples sent whose frame truly has a person within the radius, by the "
          "ground truth's people_count at that distance):")
    print("| payload_policy | truly sensitive | of them sent with the image (missed) | redacted but not truly sensitive |")
    print("|---|---|---|---|")
    for r in rows:
        if r.get("truly_sensitive") is not None:
            print(f"| {r['policy']} | {r['truly_sensitive']} | {r['missed']} | {r['over_redacted']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"data": str(index), "threshold": a.threshold, "rows": rows}, indent=1))
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
