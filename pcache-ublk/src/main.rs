//! `pcache-ublk`: serves a pcache (cache device + backing device) as `/dev/ublkbN`.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("pcache-ublk: not implemented yet (see issue: pcache-ublk)")
}
