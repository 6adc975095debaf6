import type { StudioBridge } from '../../shared/api';

declare global {
  interface Window {
    /** Studio bridge from the preload script, missing when the page runs outside the desktop window. */
    attune?: StudioBridge;
  }
}
