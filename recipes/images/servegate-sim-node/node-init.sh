#!/bin/bash
# PID 1 of a simulated node: start the node's own docker engine and keep running.
# No bridge and no iptables: the node's containers use --network host, i.e. the node's fabric address.
set -u
mkdir -p /var/log
# A node killed hard (docker kill) leaves dockerd's and containerd's pid files behind, and dockerd then refuses to
# start ("pid file found"). This script is PID 1 of a container that is just starting: no engine runs here yet.
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
dockerd --storage-driver=overlay2 --bridge=none --iptables=false --ip-masq=false \
  >/var/log/dockerd.log 2>&1 &
trap 'kill -TERM %1 2>/dev/null; wait; exit 0' TERM INT
wait
