(function(){
  var D=window.CAMLENS_RUN, n=D.path.length, S=D.strings, PER=48;
  function s(col,i){var v=D[col][i];return v<0?null:S[v];}
  var el=function(id){return document.getElementById(id);};
  var grid=el('grid'), page=0, shown=[];
  function option(select,value,text){var o=document.createElement('option');
    o.value=value;o.textContent=text;select.appendChild(o);}
  function fill(select,col){var seen={};for(var i=0;i<n;i++){var v=s(col,i);
    if(v!==null&&!(v in seen)){seen[v]=1;}}
    Object.keys(seen).sort(function(a,b){return a.localeCompare(b);})
      .forEach(function(v){option(select,v,v);});}
  fill(el('method'),'method'); fill(el('predicted'),'predicted_name');
  fill(el('truth'),'true_name');
  if(el('method').options.length>1){el('method').selectedIndex=1;}
  function apply(){
    var m=el('method').value,p=el('predicted').value,t=el('truth').value;
    var wrong=el('wrong').checked;
    var lo=parseFloat(el('lo').value)/100, hi=parseFloat(el('hi').value)/100;
    shown=[];
    for(var i=0;i<n;i++){
      if(m&&s('method',i)!==m)continue; if(p&&s('predicted_name',i)!==p)continue;
      if(t&&s('true_name',i)!==t)continue; if(wrong&&D.correct[i]!==0)continue;
      var q=D.probability[i]; if(q<lo||q>hi)continue; shown.push(i);}
    var how=el('sort').value;
    shown.sort(function(a,b){
      if(how==='name'){return s('name',a).localeCompare(s('name',b));}
      var d=D.probability[a]-D.probability[b]; return how==='asc'?d:-d;});
    page=0; draw();}
  function figure(src,caption){
    var f=document.createElement('figure'),im=document.createElement('img');
    im.loading='lazy';im.src=src;im.alt=caption;var c=document.createElement('figcaption');
    c.textContent=caption;f.appendChild(im);f.appendChild(c);return f;}
  function draw(){
    var pages=Math.max(1,Math.ceil(shown.length/PER)); page=Math.min(Math.max(page,0),pages-1);
    grid.textContent='';
    shown.slice(page*PER,page*PER+PER).forEach(function(i){
      var card=document.createElement('section');
      card.className='card'+(D.correct[i]===0?' wrong':'');
      var pair=document.createElement('div');pair.className='pair';
      pair.appendChild(figure(s('image',i),'original'));
      var where=s('layer',i)?' at '+s('layer',i):'';
      pair.appendChild(figure(s('overlay',i),s('method',i)+where));
      card.appendChild(pair);
      var text=s('name',i)+': predicted '+s('predicted_name',i)+' '+
        (100*D.probability[i]).toFixed(1)+'%';
      if(s('true_name',i)!==null){text+=' \u00b7 true '+s('true_name',i);}
      var aim=s('target_name',i);
      if(aim!==null&&aim!==s('predicted_name',i)){text+=' \u00b7 explains '+aim;}
      var p=document.createElement('p');p.textContent=text;p.title=s('path',i);card.appendChild(p);
      grid.appendChild(card);});
    el('count').textContent=shown.length+' of '+n+' rows';
    el('page').textContent='page '+(page+1)+' of '+pages;}
  ['method','predicted','truth','wrong','sort','lo','hi'].forEach(function(id){
    el(id).addEventListener('change',apply);});
  function turn(step){page+=step;draw();el('grid').scrollIntoView();}
  el('prev').addEventListener('click',function(){turn(-1);});
  el('next').addEventListener('click',function(){turn(1);});
  apply();
})();
