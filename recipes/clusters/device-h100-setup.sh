#!/usr/bin/env bash
# Install an offline wheelhouse on the lent GPU machine for recipes/clusters/device-h100.yaml:
# wheels into SITE with no index and no dependency resolution (the wheelhouse already subtracted what the
# image has), then SITE/bin/python3, a wrapper of the image's python3 that puts SITE on its path.
# With AIPERF_WHEELS=DIR (wheels of aiperf and what the image lacks for it, resolved against the image's
# versions), AIPerf goes into its own AIPERF_SITE (/tmp/aiperf-site) with a console script at
# AIPERF_SITE/bin/aiperf; export SERVEGATE_AIPERF=that path so the suite uses it.
# WHEEL_DIR may be a bundle (`servegate wheelhouse ... --bundle DIR`, it has manifest.json): its install.py
# then joins the parts, checks every sha256 and installs wheels/ into SITE and aiperf/ into AIPERF_SITE.
# Usage: bash recipes/clusters/device-h100-setup.sh WHEEL_DIR|BUNDLE [SITE=/tmp/site]
set -euo pipefail
wheels=${1:?usage: device-h100-setup.sh WHEEL_DIR|BUNDLE [SITE]}
site=${2:-/tmp/site}
base=${SERVEGATE_BASE_PYTHON:-$(command -v python3)}
if [ ! -f "$wheels/manifest.json" ] && ! compgen -G "$wheels/*.whl" > /dev/null; then
  echo "device-h100-setup.sh: $wheels holds neither a bundle (manifest.json) nor wheels (*.whl): carry it first" >&2
  exit 2
fi
if [ -f "$wheels/manifest.json" ]; then
  "$base" "$wheels/install.py" "$wheels" --python "$base" --target "$site" \
    --aiperf-target "${AIPERF_SITE:-/tmp/aiperf-site}"
else
  "$base" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl
fi
mkdir -p "$site/bin"
cat > "$site/bin/python3" <<WRAPPER
#!/bin/sh
PYTHONPATH=$site\${PYTHONPATH:+:\$PYTHONPATH} exec $base "\$@"
WRAPPER
chmod +x "$site/bin/python3"
"$site/bin/python3" -c 'import importlib.util, vllm; ray = importlib.util.find_spec("ray") and __import__("ray"); print("servegate device env:", "vllm", vllm.__version__, "ray", ray.__version__ if ray else "absent")'

if [ -n "${AIPERF_WHEELS:-}" ]; then
  aiperf_site=${AIPERF_SITE:-/tmp/aiperf-site}
  "$base" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$aiperf_site" \
    "$AIPERF_WHEELS"/*.whl
  mkdir -p "$aiperf_site/bin"
  cat > "$aiperf_site/bin/aiperf" <<WRAPPER
#!/bin/sh
PYTHONPATH=$aiperf_site exec $base -c 'import sys; from aiperf.cli import app; sys.argv[0] = "aiperf"; sys.exit(app())' "\$@"
WRAPPER
  chmod +x "$aiperf_site/bin/aiperf"
  "$aiperf_site/bin/aiperf" --version 2>&1 | tail -1 | sed 's/^/servegate device env: aiperf /'
fi
