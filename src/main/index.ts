/**
 * Electron main process of Attune Studio, in app lifecycle order: settings fixed before `ready`,
 * then IPC and the window once the app is ready, then the rules for closing and quitting.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { app, BrowserWindow, ipcMain } from 'electron';
import { isTrustedRendererUrl, registerIpcHandlers } from './ipc';
import { createStudioService } from './studio';

const PRELOAD_PATH = join(import.meta.dirname, '../preload/index.cjs');

// electron-vite sets ELECTRON_RENDERER_URL to its dev server during `electron-vite dev`. A
// packaged app ignores it, so the environment cannot point the window at another page.
const RENDERER_URL =
  !app.isPackaged && process.env.ELECTRON_RENDERER_URL
    ? process.env.ELECTRON_RENDERER_URL
    : pathToFileURL(join(import.meta.dirname, '../renderer/index.html')).href;

let mainWindow: BrowserWindow | null = null;

// Before ready: sandbox every renderer, and let a second launch focus the running instance.
app.enableSandbox();
if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  app.on('second-instance', focusMainWindow);
  app.on('web-contents-created', (_event, contents) => {
    contents.setWindowOpenHandler(() => ({ action: 'deny' }));
    contents.on('will-navigate', (event, url) => {
      if (!isTrustedRendererUrl(url, RENDERER_URL)) event.preventDefault();
    });
  });
  app.whenReady().then(onReady, (error: unknown) => {
    console.error('Attune Studio failed to start:', error);
    app.exit(1);
  });
}

function onReady(): void {
  const studio = createStudioService({ version: app.getVersion() });
  registerIpcHandlers(ipcMain, studio, { rendererUrl: RENDERER_URL });
  mainWindow = createMainWindow();

  // On macOS the app keeps running without windows, and clicking the dock icon opens a new one.
  app.on('activate', () => {
    if (BrowserWindow.getAllWindows().length === 0) mainWindow = createMainWindow();
  });
}

function createMainWindow(): BrowserWindow {
  const window = new BrowserWindow({
    title: 'Attune Studio',
    width: 1280,
    height: 800,
    show: false,
    webPreferences: {
      preload: PRELOAD_PATH,
      sandbox: true,
      contextIsolation: true,
      nodeIntegration: false,
    },
  });
  window.once('ready-to-show', () => window.show());
  window.on('closed', () => {
    if (mainWindow === window) mainWindow = null;
  });
  window.loadURL(RENDERER_URL).catch((error: unknown) => {
    console.error(`Attune Studio could not load ${RENDERER_URL}:`, error);
  });
  return window;
}

function focusMainWindow(): void {
  if (!mainWindow) return;
  if (mainWindow.isMinimized()) mainWindow.restore();
  mainWindow.focus();
}

// Closing the last window quits, except on macOS where apps stay open until Cmd+Q.
app.on('window-all-closed', () => {
  if (process.platform !== 'darwin') app.quit();
});
