# Sourced by the detached device session scripts (device-h100-session.sh, device-planner-session.sh):
# the repository, BUNDLE and RESULTS paths, log() to RESULTS/session.log, and install_bundle (device-h100-setup.sh
# runs the bundle's install.py: parts joined, every sha256 checked, pip --no-index, into /tmp/site).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bundle=${BUNDLE:-/tmp/bundle}
results=${RESULTS:-/tmp/sg-results}
mkdir -p "$results"
log() { echo "$(date -u +%T) $*" | tee -a "$results/session.log"; }
install_bundle() {
  log "installing $bundle"
  AIPERF_SITE=/tmp/aiperf-site bash "$repo/recipes/clusters/device-h100-setup.sh" "$bundle" /tmp/site \
    >> "$results/session.log" 2>&1 || { log "setup failed (see session.log: a named part or checksum)"; return 1; }
}
