# xtask: timeout=120 expect=fail
# A plain poweroff without a report.
poweroff -f
sleep 30
