#!/usr/bin/env bash
# Make sure RabbitMQ and PostgreSQL answer on 127.0.0.1; start them when they do not.
# --demo (`make demo`): PostgreSQL is wanted but not required (the demo falls back to a SQLite file where none
# can start), and the browser the tests need is not installed.
set -euo pipefail
MODE=${1:-}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 1
  done
  echo "error: $name did not come up on port $port" >&2
  return 1
}

if ! port_open 5672; then
  echo "== starting RabbitMQ"
  rabbitmq-server -detached
  wait_port RabbitMQ 5672
fi
start_postgres() {
  echo "== starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start && wait_port PostgreSQL 5432
}
if ! port_open 5432; then
  if [ "$MODE" = "--demo" ]; then
    start_postgres || echo "warning: PostgreSQL could not start; the demo will use a SQLite file" >&2
  else
    start_postgres
  fi
fi
# RabbitMQ's management API: Flower reads queue lengths from it (idempotent; online on a running node).
if ! port_open 15672; then
  echo "== enabling the RabbitMQ management plugin"
  rabbitmq-plugins enable rabbitmq_management >/dev/null
  wait_port "RabbitMQ management" 15672
fi
# Debian's headless chromium and its driver: the Flower browser test (tests/e2e/test_flower.py).
if [ "$MODE" != "--demo" ] && ! command -v chromedriver >/dev/null; then
  echo "== installing chromium and chromium-driver (Debian)"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if port_open 5432; then echo "== RabbitMQ and PostgreSQL are up"; else echo "== RabbitMQ is up"; fi
