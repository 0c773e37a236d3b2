# xtask: timeout=25 expect=fail
# A hung guest: the harness kills QEMU after the timeout.
sleep 600
