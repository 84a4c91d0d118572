#!/usr/bin/env bash
# Validates every Kubernetes manifest in deploy/kubernetes/ against the API schemas, offline:
# kubernetes-validate (PyPI) bundles the OpenAPI/JSON schemas of each Kubernetes version, so
# nothing is fetched at validation time. Strict mode also refuses unknown fields (typos).
# Creates its own venv (deploy/.venv) on first use; needs python3 with venv, and PyPI once.
#   deploy/validate.sh                 # the versions in K8S_VERSIONS
#   K8S_VERSIONS="1.33.0" deploy/validate.sh
set -euo pipefail
cd "$(dirname "$0")"

KV_VERSION=1.37.0
# Oldest supported (preStop "sleep" is on by default from 1.30) and newest bundled.
K8S_VERSIONS=${K8S_VERSIONS:-"1.31.0 1.37.0"}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/kubernetes-validate" ] \
   || ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('kubernetes-validate') == '$KV_VERSION'" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi

manifests=()
for f in kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done

# Every manifest is applied by `kubectl apply -k` (listed in kustomization.yaml), and
# every listed one exists.
for f in "${manifests[@]}"; do
  grep -qE "^  - $(basename "$f")\$" kubernetes/kustomization.yaml \
    || { echo "validate.sh: $f is not listed in kubernetes/kustomization.yaml" >&2; exit 1; }
done
for r in $(awk '/^resources:/ {on = 1; next} on && /^  - / {print $2} on && !/^  - / {on = 0}' kubernetes/kustomization.yaml); do
  [ -f "kubernetes/$r" ] || { echo "validate.sh: kustomization lists missing $r" >&2; exit 1; }
done

for v in $K8S_VERSIONS; do
  echo "-- Kubernetes $v (strict): ${manifests[*]}"
  "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$v" "${manifests[@]}"
done
