"""Text-video retrieval evaluation: a split embedded and ranked (`retrieval`) and the metrics (`metrics`)."""
