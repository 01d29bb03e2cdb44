"""Running on a Ray cluster: joining it (`connect`), submitting a job to it (`submit`), and the progress lines
a stage prints while its tasks run (`progress`)."""
