"""loopchain: a permissioned blockchain node suite (RadioStation, peers, REST proxy, SCORE)."""
