#!/usr/bin/env bash
# Install the Debian packages Shoal's tests and benchmarks use, when they are missing.
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# iptables: the partition tests drop a namespace's packets (iproute2 gives ip netns, veth).
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# --- images and the runc runtime (tests/test_images.py, tests/test_runtime_runc.py) ---
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
# busybox-static: the test images are /bin/busybox in one layer, so it must be static.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
# --- end images and runc ---
# --- pod network, Services and the overlay (shoal.net) ---
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v wireguard-go >/dev/null 2>&1 || need+=(wireguard-go)
command -v wg >/dev/null 2>&1 || need+=(wireguard-tools)
# --- end pod network ---
# --- observability: the live page is tested in a real headless browser ---
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# --- end observability ---
# --- the bus (shoal.bus): every peer runs a nats-server ---
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
# --- end bus ---
# --- ingress (shoal.net.ingress): every peer answers Ingresses with haproxy ---
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
# --- end ingress ---
# --- install: shoal install's unit is checked with systemd-analyze verify (tests/test_install.py) ---
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# --- end install ---
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
