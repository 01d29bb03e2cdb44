"""The shard folder: its format (`format`), the samples' bytes read back (`reader`), a split streamed to
training and evaluation (`stream`), frames made into the model's input (`frames`), and compact sets of the
corpus's video ids (`id_set`). `pipelines.preprocess` writes it; every later stage reads it through here."""
