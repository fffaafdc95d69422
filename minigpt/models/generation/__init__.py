"""Generation: the decode loop, conversation templates and the multi-turn chat."""
