"""Where the pipeline keeps its data: local folders and object stores behind one interface (`location`),
and one writer at a time for a folder (`lease`)."""
