"""Datasets in the hub: synthetic faces, importers, the shard layout, the validation gate,
commit-pinned loading with a node-local cache. Import the submodules you need
(``flotilla.data.api`` for the high-level calls); nothing heavy is imported here."""
