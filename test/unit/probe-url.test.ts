import { probeUrl } from '../../server/http/probe-paths.js';

describe('the container health check asks the server where it listens', () => {
  test('PORT and HOST read as the server reads them: empty is unset (3000, loopback), a wildcard host is loopback', () => {
    expect(probeUrl({}, '/healthz')).toBe('http://127.0.0.1:3000/healthz');
    // `PORT=` starts the server on 3000; the check asked port 80 (`http://127.0.0.1:/healthz`) and failed.
    expect(probeUrl({ PORT: '', HOST: '' }, '/readyz')).toBe('http://127.0.0.1:3000/readyz');
    expect(probeUrl({ PORT: '8080', HOST: '0.0.0.0' }, '/healthz')).toBe('http://127.0.0.1:8080/healthz');
    expect(probeUrl({ PORT: '8080', HOST: '::' }, '/healthz')).toBe('http://127.0.0.1:8080/healthz');
    expect(probeUrl({ PORT: '8080', HOST: '::1' }, '/healthz')).toBe('http://[::1]:8080/healthz');
    expect(probeUrl({ PORT: '8080', HOST: '10.0.0.5' }, '/healthz')).toBe('http://10.0.0.5:8080/healthz');
  });
});
