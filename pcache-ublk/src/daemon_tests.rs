//! Tests of the daemon's pieces that need no ublk driver.
