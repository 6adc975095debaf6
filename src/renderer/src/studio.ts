import { createStudioClient, type StudioApi } from '../../shared/api';
import { UserError } from '../../shared/errors';

/** Returns the studio API over the preload bridge, or throws when the page has no bridge. */
export function connectStudio(): StudioApi {
  if (!window.attune) {
    throw new UserError(
      'window.attune is missing: this page only works inside the Attune Studio desktop window ' +
        '(npm start). Use the CLI for headless work: npm run attune -- --help',
    );
  }
  return createStudioClient(window.attune);
}
