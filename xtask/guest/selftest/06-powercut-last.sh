# xtask: timeout=120 expect=fail
# A power cut with nothing after it to check the aftermath.
xt_powercut
