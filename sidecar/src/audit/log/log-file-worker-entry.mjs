// Worker entry when Pavilion runs from its TypeScript sources (npm start, tests): module
// loader hooks are per thread, so register tsx here before importing the worker.
import { register } from 'tsx/esm/api';

register();
await import('./log-file-worker.ts');
