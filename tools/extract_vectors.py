"""Copy one protocol's golden vectors from the shared research file into protocols/<name>/.

Usage: python tools/extract_vectors.py mdb [--shared ../shared/research/golden-vectors.json]

Keeps every vector's source, meaning and verified flag; directions become host/device.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {
    "mdb": {"MDB": {}, "MDB-linux-PARMRK": {"wire": "9bit"}},
    "ssp": {"SSP": {}, "eSSP": {}},
    "cctalk": {"ccTalk": {}, "ccTalk-CRC16": {"checksum": "crc16"}},
    "id003": {"ID-003": {}},
}


def classify(item: dict, extra: dict) -> dict:
    """Options a test needs to read this vector: known-bad ones and non-frame forms."""
    text = (item.get("meaning", "") + " " + item.get("notes", "")).lower()
    out = dict(extra)
    if item["protocol"] == "eSSP" and not item["hex"].upper().startswith("7F"):
        out["form"] = "essp-inner"  # a decrypted eSSP block, not an SSP packet
    elif not item["verified"] and any(k in text for k in ("typo", "not valid", "does not match",
                                                           "missing")):
        out["expect_valid"] = False
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=sorted(MAPPING))
    parser.add_argument("--shared",
                        default=str(ROOT.parent / "shared/research/golden-vectors.json"))
    args = parser.parse_args()
    shared = json.loads(Path(args.shared).read_text(encoding="utf-8"))
    vectors = []
    adapter_lines = []
    for item in shared:
        extra = MAPPING[args.protocol].get(item["protocol"])
        direction = "host" if item["direction"].startswith("host") else "device"
        entry = {"direction": direction, "hex": item["hex"], "meaning": item["meaning"],
                 "source": item["source"], "verified": item["verified"]}
        if item.get("notes"):
            entry["notes"] = item["notes"]
        if extra is not None:
            vectors.append({**entry, **classify(item, extra)})
        elif item["protocol"] == "MDB-Qibixx-ASCII" and args.protocol == "mdb":
            adapter_lines.append(entry)
    out = {"protocol": args.protocol,
           "source": "copied from shared research golden-vectors.json by tools/extract_vectors.py",
           "vectors": vectors}
    if adapter_lines:
        out["adapter_lines"] = adapter_lines
    path = ROOT / "protocols" / args.protocol / "vectors.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{path}: {len(vectors)} vectors, {len(adapter_lines)} adapter lines")


if __name__ == "__main__":
    main()
