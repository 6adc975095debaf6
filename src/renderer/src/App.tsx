import { useEffect, useState } from 'react';
import type { DatasetSummary, StudioInfo } from '../../shared/api';
import { connectStudio } from './studio';

type Load<T> =
  | { state: 'loading' }
  | { state: 'ready'; value: T }
  | { state: 'failed'; message: string };

interface Overview {
  info: StudioInfo;
  datasets: DatasetSummary[];
}

async function loadOverview(): Promise<Overview> {
  const studio = connectStudio();
  const [info, datasets] = await Promise.all([studio.getStudioInfo(), studio.listDatasets()]);
  return { info, datasets };
}

export function App() {
  const [overview, setOverview] = useState<Load<Overview>>({ state: 'loading' });

  useEffect(() => {
    let active = true;
    loadOverview().then(
      (value) => active && setOverview({ state: 'ready', value }),
      (error: unknown) => active && setOverview({ state: 'failed', message: messageOf(error) }),
    );
    return () => {
      active = false;
    };
  }, []);

  return (
    <main className="app">
      <header>
        <h1>Attune Studio</h1>
        {overview.state === 'ready' && <InfoLine info={overview.value.info} />}
      </header>
      {overview.state === 'loading' && <p>Loading…</p>}
      {overview.state === 'failed' && <p className="error">{overview.message}</p>}
      {overview.state === 'ready' && <DatasetList datasets={overview.value.datasets} />}
    </main>
  );
}

function InfoLine({ info }: { info: StudioInfo }) {
  return (
    <p className="info">
      Version {info.version} · backend {info.backend ?? 'not started'} · {info.platform}
    </p>
  );
}

function DatasetList({ datasets }: { datasets: DatasetSummary[] }) {
  if (datasets.length === 0) return <p>No datasets found.</p>;
  return (
    <section>
      <h2>Datasets</h2>
      <ul className="datasets">
        {datasets.map((dataset) => (
          <li key={dataset.id}>
            <span className="title">{dataset.title}</span> <code>{dataset.id}</code>
          </li>
        ))}
      </ul>
    </section>
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
