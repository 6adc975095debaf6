/**
 * Preload script of the Attune window. It runs sandboxed with context isolation, so it can load
 * only `electron` and code bundled into this file, and it exposes the studio bridge as
 * `window.attune`.
 */
import { contextBridge, ipcRenderer } from 'electron';
import { createStudioBridge } from './bridge';

contextBridge.exposeInMainWorld(
  'attune',
  createStudioBridge((channel, ...args) => ipcRenderer.invoke(channel, ...args)),
);
