// A proof worker that exits before it reports ready (a worker that cannot start).
process.exit(3);
